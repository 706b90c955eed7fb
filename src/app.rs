//! Start-up as a type: [`Application::build`] binds every listener (port 0 allowed) and exposes
//! the bound addresses; [`Application::run_until_stopped`] serves until shutdown.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::settings::Settings;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug)]
pub struct Application {
    http: TcpListener,
    http_addr: SocketAddr,
    store: Store,
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        let store =
            Store::open(&settings.store.data_dir, settings.store.key_file.as_deref()).await?;
        let addr = settings.server.http_listen;
        let http = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind {
                addr,
                what: "HTTP",
                source,
            })?;
        let http_addr = http.local_addr().map_err(|source| StartError::Bind {
            addr,
            what: "HTTP",
            source,
        })?;
        Ok(Self {
            http,
            http_addr,
            store,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until_stopped(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = Router::new().route("/healthz", get(healthz));
        axum::serve(self.http, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.store.close().await;
        Ok(())
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
