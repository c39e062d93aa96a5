//! Comparing and copying MAC and IPv4 addresses held as byte arrays
//! (word-wise, so no `memcmp`/`memcpy` call reaches the verifier).

#[inline(always)]
pub fn mac_eq(a: &[u8; 6], b: &[u8; 6]) -> bool {
    a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] && a[5] == b[5]
}

#[inline(always)]
pub fn mac_zero(a: &[u8; 6]) -> bool {
    (a[0] | a[1] | a[2] | a[3] | a[4] | a[5]) == 0
}

#[inline(always)]
pub fn ip_eq(a: &[u8; 4], b: &[u8; 4]) -> bool {
    u32::from_ne_bytes(*a) == u32::from_ne_bytes(*b)
}

#[inline(always)]
pub fn mac_at(b: &[u8; 14], off: usize) -> [u8; 6] {
    [
        b[off],
        b[off + 1],
        b[off + 2],
        b[off + 3],
        b[off + 4],
        b[off + 5],
    ]
}

#[inline(always)]
pub fn set_mac(b: &mut [u8; 14], off: usize, m: &[u8; 6]) {
    b[off] = m[0];
    b[off + 1] = m[1];
    b[off + 2] = m[2];
    b[off + 3] = m[3];
    b[off + 4] = m[4];
    b[off + 5] = m[5];
}
