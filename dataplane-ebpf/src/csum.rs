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
