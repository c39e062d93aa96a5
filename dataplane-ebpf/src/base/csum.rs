//! Internet checksum arithmetic (RFC 1071, incremental update RFC 1624).
//! Values are host-order numbers of the big-endian 16-bit words.

/// Folds a 32/64-bit one's-complement sum into 16 bits (not inverted).
#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from `old` to `new`.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    let s = (!check as u64) + (!old as u64) + new as u64;
    !fold(s)
}

/// Checksum of a 20-byte IPv4 header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    let mut s: u64 = 0;
    let mut i = 0;
    while i < 20 {
        s += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
        i += 2;
    }
    !fold(s)
}

/// A 20-byte IPv4 header (no options, ID 0, TTL 64) with its checksum.
/// `flags`: the high byte of the flags/fragment field (0x40: DF).
#[inline(always)]
pub fn ipv4_header_with_checksum(
    tos: u8,
    total_len: u16,
    flags: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) -> [u8; 20] {
    let l = total_len.to_be_bytes();
    let mut h: [u8; 20] = [
        0x45, tos, l[0], l[1], 0, 0, flags, 0, 64, proto, 0, 0, src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
    ];
    let c = ipv4_header(&h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    h
}
