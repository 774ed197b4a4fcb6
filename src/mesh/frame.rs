//! Framing of mesh datagrams inside WireGuard: a minimal IPv4/UDP header around each payload.
//!
//! boringtun's `Tunn::decapsulate` only hands back plaintext that looks like an IP packet (it
//! reads the version nibble, the total length and the source address). So every mesh datagram
//! is wrapped in a 20-byte IPv4 header (no options, DF set, TTL 64, protocol UDP, valid header
//! checksum) and an 8-byte UDP header (ports [`MESH_PORT`], checksum 0, which IPv4 allows).
//! The addresses are *tunnel* addresses derived from the nodes' public keys
//! ([`tunnel_addr`]); they never appear on the real network, which only ever sees the
//! encrypted WireGuard packet.
//!
//! This module is pure: no I/O, no allocation. Decoding checks every field it relies on and
//! returns an error for anything else; it never panics on any input.

use std::net::Ipv4Addr;

use blake2::{Blake2s256, Digest};

use super::keys::MeshPublicKey;

/// Largest mesh payload in bytes. With the 28-byte inner header and WireGuard's 32 bytes of
/// overhead a full datagram is 1260 bytes of UDP payload (1288 bytes as an IPv4 packet),
/// which fits any path MTU of 1300 or more without fragmentation.
pub const MAX_PAYLOAD: usize = 1200;

/// Length of the inner IPv4 (20) + UDP (8) header.
pub const HEADER_LEN: usize = 28;

/// Largest inner packet (header + payload).
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;

/// UDP port written in both port fields of the inner header.
pub const MESH_PORT: u16 = 51820;

const IPV4_HEADER_LEN: usize = 20;
const PROTO_UDP: u8 = 17;
const TTL: u8 = 64;
/// Flags/fragment-offset field: Don't Fragment, offset 0.
const FLAGS_DF: u16 = 0x4000;

/// Why an inner packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The payload is longer than [`MAX_PAYLOAD`].
    #[error("payload of {len} bytes exceeds the maximum of {MAX_PAYLOAD}")]
    PayloadTooLarge {
        /// The payload's length.
        len: usize,
    },
    /// The output buffer cannot hold the frame.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The packet is shorter than the headers.
    #[error("packet shorter than the IPv4/UDP header")]
    Truncated,
    /// A header field has a value this framing never produces.
    #[error("malformed inner header: {0}")]
    Malformed(&'static str),
}

/// A decoded inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Tunnel source address.
    pub src: Ipv4Addr,
    /// Tunnel destination address.
    pub dst: Ipv4Addr,
    /// The mesh payload.
    pub payload: &'a [u8],
}

/// The tunnel address of a node: `100.64.0.0/10` (shared address space, never routed on the
/// Internet) plus the low 22 bits of `BLAKE2s(public key)`. Only used inside the encryption.
pub fn tunnel_addr(key: &MeshPublicKey) -> Ipv4Addr {
    let digest = Blake2s256::digest(key.as_bytes());
    let low = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x003f_ffff;
    Ipv4Addr::from(0x6440_0000 | low)
}

fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Write `payload` framed into `out`; returns the frame's length.
pub fn encode(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, FrameError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge { len: payload.len() });
    }
    let total = HEADER_LEN + payload.len();
    let out = out.get_mut(..total).ok_or(FrameError::BufferTooSmall)?;
    // Lengths fit in u16: total <= MAX_FRAME.
    let total16 = total as u16;
    let (ip, rest) = out.split_at_mut(IPV4_HEADER_LEN);
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&total16.to_be_bytes());
    ip[4..6].copy_from_slice(&[0, 0]);
    ip[6..8].copy_from_slice(&FLAGS_DF.to_be_bytes());
    ip[8] = TTL;
    ip[9] = PROTO_UDP;
    ip[10..12].copy_from_slice(&[0, 0]);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let checksum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&checksum.to_be_bytes());
    let (udp, body) = rest.split_at_mut(8);
    udp[0..2].copy_from_slice(&MESH_PORT.to_be_bytes());
    udp[2..4].copy_from_slice(&MESH_PORT.to_be_bytes());
    udp[4..6].copy_from_slice(&(total16 - IPV4_HEADER_LEN as u16).to_be_bytes());
    udp[6..8].copy_from_slice(&[0, 0]);
    body.copy_from_slice(payload);
    Ok(total)
}

/// Parse an inner packet produced by [`encode`].
pub fn decode(packet: &[u8]) -> Result<Frame<'_>, FrameError> {
    if packet.len() < HEADER_LEN {
        return Err(FrameError::Truncated);
    }
    let (ip, rest) = packet.split_at(IPV4_HEADER_LEN);
    if ip[0] != 0x45 {
        return Err(FrameError::Malformed("not IPv4 without options"));
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if total != packet.len() {
        return Err(FrameError::Malformed("IPv4 total length"));
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(FrameError::Malformed("fragment"));
    }
    if ip[9] != PROTO_UDP {
        return Err(FrameError::Malformed("protocol is not UDP"));
    }
    if ipv4_checksum(ip) != 0 {
        return Err(FrameError::Malformed("IPv4 header checksum"));
    }
    let (udp, body) = rest.split_at(8);
    if u16::from_be_bytes([udp[0], udp[1]]) != MESH_PORT
        || u16::from_be_bytes([udp[2], udp[3]]) != MESH_PORT
    {
        return Err(FrameError::Malformed("UDP port"));
    }
    if usize::from(u16::from_be_bytes([udp[4], udp[5]])) != total - IPV4_HEADER_LEN {
        return Err(FrameError::Malformed("UDP length"));
    }
    if body.len() > MAX_PAYLOAD {
        return Err(FrameError::PayloadTooLarge { len: body.len() });
    }
    Ok(Frame {
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        payload: body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    const A: Ipv4Addr = Ipv4Addr::new(100, 64, 1, 2);
    const B: Ipv4Addr = Ipv4Addr::new(100, 64, 3, 4);

    #[test]
    fn round_trip_all_sizes() {
        let mut buf = [0u8; MAX_FRAME];
        for len in [0, 1, 2, 3, 100, MAX_PAYLOAD - 1, MAX_PAYLOAD] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let n = encode(A, B, &payload, &mut buf).expect("encode");
            assert_eq!(n, HEADER_LEN + len);
            let frame = decode(&buf[..n]).expect("decode");
            assert_eq!(
                frame,
                Frame {
                    src: A,
                    dst: B,
                    payload: &payload
                }
            );
        }
    }

    #[test]
    fn too_large_and_small_buffer() {
        let mut buf = [0u8; MAX_FRAME + 10];
        assert_eq!(
            encode(A, B, &[0u8; MAX_PAYLOAD + 1], &mut buf),
            Err(FrameError::PayloadTooLarge {
                len: MAX_PAYLOAD + 1
            })
        );
        assert_eq!(
            encode(A, B, &[0u8; 10], &mut [0u8; 20]),
            Err(FrameError::BufferTooSmall)
        );
    }

    #[test]
    fn every_single_bit_flip_in_the_header_is_refused() {
        let mut buf = [0u8; 64];
        let n = encode(A, B, b"hello", &mut buf).expect("encode");
        for byte in 0..HEADER_LEN {
            // Addresses are covered by the checksum; only UDP checksum (unused) is free.
            if (26..28).contains(&byte) {
                continue;
            }
            for bit in 0..8 {
                let mut copy = buf;
                copy[byte] ^= 1 << bit;
                assert!(decode(&copy[..n]).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let len = rng.random_range(0..1400);
            let mut data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= HEADER_LEN && rng.random_bool(0.5) {
                data[0] = 0x45;
            }
            let _ = decode(&data);
        }
    }

    #[test]
    fn tunnel_addresses_are_in_shared_space() {
        for _ in 0..50 {
            let key = crate::mesh::MeshKeys::generate().public_key();
            let addr = tunnel_addr(&key);
            assert_eq!(addr.octets()[0], 100);
            assert_eq!(addr.octets()[1] & 0xc0, 64);
            assert_eq!(tunnel_addr(&key), addr);
        }
    }
}
