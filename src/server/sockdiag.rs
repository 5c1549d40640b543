//! Who owns the other end of a loopback TCP connection: one exact
//! NETLINK_SOCK_DIAG (inet_diag) lookup of the peer's socket by its four
//! addresses and ports, which the kernel answers from its connection hash
//! whatever the number of sockets. Reading /proc/net/tcp instead would
//! read every socket for every connection: a storm of N connections
//! would cost N².
//!
//! Four structures and one constant are all it takes, so they are written
//! out here rather than pulled in with a netlink crate family.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h): the message type of a
/// sock_diag request and of its answer.
const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// `INET_DIAG_NOCOOKIE`: the request names the socket by its addresses.
const NO_COOKIE: u32 = !0;

/// Bytes read for the answer: one header, one `inet_diag_msg` and the few
/// attributes the kernel always adds fit many times over.
const ANSWER_BYTES: usize = 4096;

/// `struct inet_diag_sockid`: addresses in network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockId {
    sport: u16,
    dport: u16,
    src: [u8; 16],
    dst: [u8; 16],
    interface: u32,
    cookie: [u32; 2],
}

/// `struct inet_diag_req_v2`.
#[repr(C)]
struct Request {
    header: libc::nlmsghdr,
    family: u8,
    protocol: u8,
    ext: u8,
    pad: u8,
    states: u32,
    id: SockId,
}

/// `struct inet_diag_msg`, after its `nlmsghdr`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Answer {
    family: u8,
    state: u8,
    timer: u8,
    retrans: u8,
    id: SockId,
    expires: u32,
    rqueue: u32,
    wqueue: u32,
    uid: u32,
    inode: u32,
}

/// The address bytes inet_diag expects: IPv4 in the first four.
fn address_bytes(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// An IPv4 address an IPv6 listener shows as `::ffff:a.b.c.d` is looked
/// up as IPv4, as the peer's socket may be.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The uid owning the socket at the other end of the TCP connection
/// between `peer` (its address) and `local` (ours), when that socket is
/// on this machine and still open. A socket its process has closed is
/// only a TIME-WAIT entry that the kernel reports as uid 0: that is an
/// error, never root.
pub fn peer_uid(peer: SocketAddr, local: SocketAddr) -> io::Result<u32> {
    let (peer, local) = (canonical(peer), canonical(local));
    let family = match (peer.ip(), local.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6,
        _ => return Err(io::Error::other("mixed address families")),
    };
    // SAFETY: socket(2) with constant arguments; the fd is ours to own.
    let fd = unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    let request = Request {
        header: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: family as u8,
        protocol: libc::IPPROTO_TCP as u8,
        ext: 0,
        pad: 0,
        states: !0,
        // The peer's socket: its own end is `peer`, its other end ours.
        id: SockId {
            sport: peer.port().to_be(),
            dport: local.port().to_be(),
            src: address_bytes(peer.ip()),
            dst: address_bytes(local.ip()),
            interface: 0,
            cookie: [NO_COOKIE; 2],
        },
    };
    // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0).
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: sendto reads `size_of::<Request>()` bytes of `request` and
    // the sockaddr_nl above.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            (&request as *const Request).cast(),
            size_of::<Request>(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    // The kernel answers inside sendto: nothing to wait for, and an empty
    // queue is an error rather than a stalled accept loop.
    let mut buf = [0u32; ANSWER_BYTES / 4];
    // SAFETY: as above, for the sender's address.
    let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut from_len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: recvfrom writes at most ANSWER_BYTES into `buf` and at most
    // `from_len` bytes into `from`.
    let got = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            ANSWER_BYTES,
            libc::MSG_DONTWAIT,
            (&mut from as *mut libc::sockaddr_nl).cast(),
            &mut from_len,
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    if from.nl_pid != 0 {
        return Err(io::Error::other("an answer not from the kernel"));
    }
    parse(&buf, got as usize)
}

/// The uid in the kernel's answer (`got` bytes of `buf`).
fn parse(buf: &[u32], got: usize) -> io::Result<u32> {
    let header_len = size_of::<libc::nlmsghdr>();
    if got < header_len + size_of::<i32>() {
        return Err(io::Error::other("a short answer"));
    }
    // SAFETY: `buf` is u32-aligned and holds at least a header.
    let header: libc::nlmsghdr = unsafe { std::ptr::read(buf.as_ptr().cast()) };
    let len = (header.nlmsg_len as usize).min(got);
    match header.nlmsg_type {
        t if t == libc::NLMSG_ERROR as u16 => {
            let errno = -(buf[header_len / 4] as i32);
            Err(io::Error::from_raw_os_error(errno))
        }
        SOCK_DIAG_BY_FAMILY if len >= header_len + size_of::<Answer>() => {
            // SAFETY: in bounds (checked above) and u32-aligned.
            let answer: Answer = unsafe { std::ptr::read(buf.as_ptr().add(header_len / 4).cast()) };
            if answer.inode == 0 {
                // No process holds it: closed (TIME-WAIT, orphaned).
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the peer closed its socket",
                ));
            }
            Ok(answer.uid)
        }
        t => Err(io::Error::other(format!("an answer of type {t}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn structures_have_the_kernels_sizes() {
        assert_eq!(size_of::<SockId>(), 48);
        assert_eq!(size_of::<Request>(), 16 + 56);
        assert_eq!(size_of::<Answer>(), 72);
    }

    #[test]
    fn finds_the_owner_of_a_loopback_peer() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let uid = peer_uid(peer, server.local_addr().unwrap()).unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(uid, unsafe { libc::geteuid() });
        drop(client);
    }

    #[test]
    fn finds_ipv6_and_ipv4_mapped_peers() {
        for (listen, connect) in [("[::1]:0", "[::1]"), ("[::]:0", "127.0.0.1")] {
            let Ok(listener) = TcpListener::bind(listen) else {
                continue; // no IPv6 here
            };
            let port = listener.local_addr().unwrap().port();
            let client = TcpStream::connect(format!("{connect}:{port}")).unwrap();
            let (server, peer) = listener.accept().unwrap();
            let uid = peer_uid(peer, server.local_addr().unwrap());
            // SAFETY: geteuid has no preconditions.
            assert_eq!(uid.unwrap(), unsafe { libc::geteuid() }, "{listen}");
            drop(client);
        }
    }

    #[test]
    fn an_unknown_connection_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let err = peer_uid(nowhere, listener.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err}");
    }
}
