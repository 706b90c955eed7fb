//! systemd's readiness protocol (`sd_notify`): tells a `Type=notify` (or `notify-reload`) unit
//! when `serve` is ready, reloading and stopping. Outside systemd (no `NOTIFY_SOCKET`) every
//! call does nothing, so callers never ask where they run.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// A handle on the service manager's notification socket, or nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; an unusable value is logged once and ignored (the service still
    /// runs; systemd then says the start timed out, which names the problem well enough).
    pub fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Self::default(),
            Some(path) => Self::new(&path).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "NOTIFY_SOCKET is set but unusable: systemd will not hear that serve is ready");
                Self::default()
            }),
        }
    }

    /// A notifier sending to `path`: a socket file, or an abstract name written `@name`.
    pub fn new(path: &OsStr) -> io::Result<Self> {
        let bytes = path.as_bytes();
        let addr = match bytes.split_first() {
            None => return Err(io::Error::other("NOTIFY_SOCKET is empty")),
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                SocketAddr::from_abstract_name(name)?
            }
            Some((b'/', _)) => SocketAddr::from_pathname(path)?,
            Some(_) => {
                return Err(io::Error::other(format!(
                    "NOTIFY_SOCKET `{}` is neither an absolute path nor an @abstract name",
                    path.to_string_lossy()
                )));
            }
        };
        Ok(Self {
            target: Some((UnixDatagram::unbound()?, addr)),
        })
    }

    /// Listeners are bound and the store is migrated: clients may come.
    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload starts. systemd's `notify-reload` wants the monotonic time with it, so that a
    /// `READY=1` from before the reload is not taken as its end.
    pub fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading settings"
        ));
    }

    /// The reload is over (applied or refused: either way serve goes on).
    pub fn reloaded(&self) {
        self.ready();
    }

    /// Shutdown started: sessions and deliveries are finishing.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=finishing sessions and deliveries");
    }

    fn send(&self, state: &str) {
        let Some((socket, addr)) = &self.target else {
            return;
        };
        // Datagram sends to a local socket do not block for long; a failure only costs systemd's
        // view of the state, never the service.
        if let Err(e) = socket.send_to_addr(state.as_bytes(), addr) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn tells_a_path_socket_ready_reloading_and_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::new(path.as_os_str()).unwrap();

        n.ready();
        assert!(receive(&systemd).lines().any(|l| l == "READY=1"));

        let before = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic).tv_sec as u64;
        n.reloading();
        let msg = receive(&systemd);
        assert!(msg.lines().any(|l| l == "RELOADING=1"), "{msg}");
        let usec: u64 = msg
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .expect("MONOTONIC_USEC")
            .parse()
            .unwrap();
        assert!(
            usec / 1_000_000 >= before && usec / 1_000_000 <= before + 5,
            "{usec}"
        );
        n.reloaded();
        assert!(receive(&systemd).lines().any(|l| l == "READY=1"));

        n.stopping();
        assert!(receive(&systemd).lines().any(|l| l == "STOPPING=1"));
    }

    #[test]
    fn tells_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("postern-test-{}", std::process::id());
        let systemd =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        systemd
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Notifier::new(OsStr::new(&format!("@{name}")))
            .unwrap()
            .ready();
        assert!(receive(&systemd).lines().any(|l| l == "READY=1"));
    }

    #[test]
    fn without_a_socket_nothing_happens_and_a_bad_one_is_refused() {
        Notifier::default().ready();
        let err = Notifier::new(OsStr::new("relative/path")).unwrap_err();
        assert!(err.to_string().contains("relative/path"), "{err}");
        assert!(Notifier::new(OsStr::new("")).is_err());
    }
}
