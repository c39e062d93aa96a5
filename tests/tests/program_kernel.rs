//! Runs first in the program tier (`scripts/test program`): does this kernel
//! allow everything the tier needs? One test, one clear message per refused
//! feature, so that a machine that cannot run the tier fails once, with the
//! reason, instead of in every row.
//!
//! Needed: loading the object, BPF_PROG_TEST_RUN (without live frames),
//! native XDP on veth, and a frame sent from a veth peer with a packet
//! socket going through the port program and out of another interface.
//! Live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`) are probed and reported, not
//! needed: kernel 6.18 refuses them (EPERM) for every program.

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions};
use strato_dataplane::Attach;
use strato_tests::packets;
use strato_tests::progtest::{Net, Port, ProgramTester, World};

const A1_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 9, 1];
const A2_MAC: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 9, 2];

#[test]
fn kernel_allows_the_program_tier() {
    // Loads the object, creates the namespace and attaches the floor
    // program to every veth peer (native XDP where the kernel picks it):
    // each step panics with its own reason.
    let mut t = ProgramTester::in_test_net();

    let frame = packets::ipv4_udp(b"probe");
    let o = t
        .try_run(Attach::Floor, 0, &frame)
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN refused by this kernel: {e}"));
    assert_eq!(
        o.output, frame,
        "BPF_PROG_TEST_RUN: the do-nothing program changed the frame"
    );

    // Informational: the tier does not use live frames.
    let live = {
        let prog = t.floor().program(Attach::Floor);
        prog.test_run(TestRunOptions {
            data_in: Some(&frame),
            repeat: 1,
            attrs: TestRunAttrs::new().xdp_live_frames(1),
            ..Default::default()
        })
    };
    eprintln!(
        "BPF_PROG_TEST_RUN with live frames: {} (not used by this tier)",
        match &live {
            Ok(_) => "allowed".to_string(),
            Err(e) => format!(
                "refused ({e}: {})",
                std::error::Error::source(e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ),
        }
    );

    // Every entry point the rows deliver through attaches natively to the
    // kind of interface it serves (and detaches again).
    for (attach, iface) in [
        (Attach::Port, "tp3"),
        (Attach::Uplink, "up0"),
        (Attach::External, "up1"),
    ] {
        let link = t
            .dataplane()
            .attach_link(attach, iface)
            .unwrap_or_else(|e| {
                panic!(
                    "native XDP attach of {} to the veth {iface} refused by this kernel: {e:#}",
                    attach.program()
                )
            });
        t.dataplane()
            .detach_link(attach, link)
            .unwrap_or_else(|e| panic!("detaching {} from {iface}: {e:#}", attach.program()));
    }

    // A real delivery: a1 (tp1) to a2 (tp2) on one network, port security
    // off, through the port program attached natively to tp1.
    t.install(
        &World::new()
            .net(Net::new("a", 100).subnet("sa", "10.9.0.0/24", "10.9.0.1"))
            .port(Port::local("a1", "a", "tp1", A1_MAC, [10, 9, 0, 5]).no_security())
            .port(Port::local("a2", "a", "tp2", A2_MAC, [10, 9, 0, 6]).no_security()),
    );
    let udp = packets::udp4(
        A1_MAC,
        A2_MAC,
        [10, 9, 0, 5],
        [10, 9, 0, 6],
        64,
        40000,
        5000,
        b"probe",
    );
    let (tp1, tp2) = (t.ifindex("tp1"), t.ifindex("tp2"));
    let out = t.deliver(Attach::Port, tp1, &udp);
    let names: Vec<String> = out.iter().map(|(i, _)| t.net().name_of(*i)).collect();
    assert!(
        matches!(out.as_slice(), [(i, f)] if *i == tp2 && *f == udp),
        "a frame sent from tp1's peer through the port program (native XDP on tp1) \
         must come out of tp2 unchanged; came out of {names:?}: this kernel does not \
         deliver XDP redirects between veths as the program tier needs"
    );
}
