//! A TCP forwarder in front of a fake service, so a test can make it refuse connections (the
//! port is really closed) and come back on the same port, without losing the service's state.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:port` to `target` while open.
pub struct Gate {
    addr: SocketAddr,
    target: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    pipes: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Gate {
    pub async fn open_to(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = listener.local_addr().expect("gate address");
        let gate = Gate {
            addr,
            target,
            accept: Mutex::new(None),
            pipes: Arc::default(),
        };
        gate.serve(listener);
        gate
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes the port (new connections are refused) and cuts every forwarded connection.
    pub fn close(&self) {
        if let Some(task) = self.accept.lock().unwrap().take() {
            task.abort();
        }
        for pipe in self.pipes.lock().unwrap().drain(..) {
            pipe.abort();
        }
    }

    /// Listens on the same port again (retrying for a few seconds while the OS releases it).
    pub async fn reopen(&self) {
        for _ in 0..100 {
            if let Ok(listener) = TcpListener::bind(self.addr).await {
                self.serve(listener);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("could not listen on {} again", self.addr);
    }

    fn serve(&self, listener: TcpListener) {
        let (target, pipes) = (self.target, self.pipes.clone());
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let pipe = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(target).await {
                        let (mut a, mut b) = (inbound, outbound);
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
                let mut list = pipes.lock().unwrap();
                list.retain(|p| !p.is_finished());
                list.push(pipe);
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.close();
    }
}
