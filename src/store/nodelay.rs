//! TCP_NODELAY on the connections to PostgreSQL.
//!
//! sqlx 0.9.0 stopped setting it on the sockets it opens (upstream issue
//! launchbadge/sqlx#4335, fixed after that release). With Nagle's algorithm
//! on, a message bigger than one write — over TLS, one 64 KiB batch of
//! records — waits for the server's delayed ACK, 40 ms each time: a Resume
//! that carried 200 stages spent 85 of its 90 ms there. libpq sets the
//! option on every connection; this sets it as each pooled connection
//! opens, on every TCP socket of this process whose peer is the database's
//! port. Remove it once sqlx sets the option again.

/// Sets TCP_NODELAY on this process's TCP sockets connected to `port`.
/// Best effort: a socket it cannot inspect is left as it is.
#[cfg(target_os = "linux")]
pub(super) fn set_for_peer_port(port: u16) {
    use std::os::fd::BorrowedFd;
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return };
    for fd in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        // SAFETY: the descriptor was open when listed. Should another thread
        // close it meanwhile, the calls below fail (EBADF) or, if the number
        // was reused, apply to a socket that passes the same checks; none of
        // them closes or reads it.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let to_database = socket.peer_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a.port() == port);
        if to_database
            && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
            && let Err(e) = socket.set_tcp_nodelay(true)
        {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on a database connection");
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn set_for_peer_port(_port: u16) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[test]
    fn sockets_to_the_port_get_no_delay_and_others_are_left_alone() {
        let database = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to_database = std::net::TcpStream::connect(database.local_addr().unwrap()).unwrap();
        let to_other = std::net::TcpStream::connect(other.local_addr().unwrap()).unwrap();
        assert!(!to_database.nodelay().unwrap() && !to_other.nodelay().unwrap(), "Nagle is the default");
        super::set_for_peer_port(database.local_addr().unwrap().port());
        assert!(to_database.nodelay().unwrap());
        assert!(!to_other.nodelay().unwrap());
    }
}
