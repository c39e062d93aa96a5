//! ARP answered by the dataplane: a request turned into its reply.

use crate::base::addr::{mac_at, set_mac};

/// Turns the ARP request in `eth`/`a` into its reply from `owner`: target
/// <- sender, sender <- the owner of the asked address.
#[inline(always)]
pub fn arp_reply(eth: &mut [u8; 14], a: &mut [u8; 28], owner: &[u8; 6]) {
    let src = mac_at(eth, 6);
    let sha = [a[8], a[9], a[10], a[11], a[12], a[13]];
    let spa = [a[14], a[15], a[16], a[17]];
    let tpa = [a[24], a[25], a[26], a[27]];
    set_mac(eth, 0, &src);
    set_mac(eth, 6, owner);
    a[7] = 2;
    let mut i = 0;
    while i < 6 {
        a[18 + i] = sha[i];
        a[8 + i] = owner[i];
        i += 1;
    }
    let mut i = 0;
    while i < 4 {
        a[24 + i] = spa[i];
        a[14 + i] = tpa[i];
        i += 1;
    }
}
