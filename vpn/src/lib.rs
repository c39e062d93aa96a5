//! Strato's IPsec site-to-site VPN gateway: IKEv2 negotiation and ESP in user
//! space (the kernel here has no ESP), running on gateway hosts. Owns tunnel
//! state and SA lifetimes; must never touch the API store directly. Empty
//! until the VPN issue lands.
#![deny(unsafe_code)]
