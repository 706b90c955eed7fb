//! Opening a session up to the point of AUTH: DNS, TCP, TLS (implicit or STARTTLS), greeting, EHLO.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::command::Command;
use super::config::SmtpClientConfig;
use super::connection::SmtpConnection;
use super::ehlo::Capabilities;
use super::error::{SmtpError, Stage};
use super::tls;
use super::trace::Trace;
use super::wire::{Stream, Wire, timed};
use crate::domain::TlsMode;

/// Connects and secures a session, leaving it ready for AUTH.
pub(crate) async fn open(
    config: &SmtpClientConfig,
    tls_config: &Arc<rustls::ClientConfig>,
    trace: &mut Trace<'_>,
) -> Result<SmtpConnection, SmtpError> {
    let tcp = connect_tcp(config, trace).await?;
    let stream = match config.tls {
        TlsMode::Implicit => {
            Stream::Tls(Box::new(start_tls(config, tls_config, tcp, trace).await?))
        }
        TlsMode::Starttls => Stream::Plain(tcp),
    };
    let mut wire = Wire::new(stream);
    let t = config.timeouts;

    let greeting = wire.read_reply(Stage::Greeting, t.greeting).await;
    let greeting = trace.record("greeting", greeting, ToString::to_string)?;
    if greeting.code != 220 {
        return Err(SmtpError::Rejected {
            stage: Stage::Greeting,
            reply: greeting,
        });
    }
    let mut caps = ehlo(&mut wire, config, trace).await?;

    if config.tls == TlsMode::Starttls {
        if !caps.starttls {
            let err = SmtpError::StartTlsNotOffered {
                host: config.host.clone(),
            };
            trace.step("starttls", false, || err.to_string());
            return Err(err);
        }
        wire.queue(Command::StartTls);
        wire.flush(Stage::StartTls, t.command).await?;
        let reply = wire.read_reply(Stage::StartTls, t.command).await;
        let reply = trace.record("starttls", reply, ToString::to_string)?;
        if reply.code != 220 {
            return Err(SmtpError::Rejected {
                stage: Stage::StartTls,
                reply,
            });
        }
        // Anything the server sent after its 220 was sent in cleartext and could be an attacker's
        // injected reply (RFC 3207 §6, CVE-2011-0411): refuse rather than read it after TLS.
        if wire.has_buffered_input() {
            return Err(SmtpError::Protocol {
                stage: Stage::StartTls,
                detail: "data received after the STARTTLS reply, before TLS".into(),
            });
        }
        let Stream::Plain(tcp) = wire.stream else {
            return Err(SmtpError::Protocol {
                stage: Stage::StartTls,
                detail: "STARTTLS on a session already secured".into(),
            });
        };
        let tls_stream = start_tls(config, tls_config, tcp, trace).await?;
        wire = Wire::new(Stream::Tls(Box::new(tls_stream)));
        // RFC 3207 §4.2: forget everything learnt before TLS and ask again.
        caps = ehlo(&mut wire, config, trace).await?;
    }
    Ok(SmtpConnection::new(wire, caps, config))
}

async fn connect_tcp(
    config: &SmtpClientConfig,
    trace: &mut Trace<'_>,
) -> Result<TcpStream, SmtpError> {
    let (host, port) = (config.host.as_str(), config.port);
    let limit = config.timeouts.connect;
    let deadline = tokio::time::Instant::now() + limit;
    let resolved =
        match tokio::time::timeout_at(deadline, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<SocketAddr>>()),
            Ok(Err(source)) => Err(SmtpError::Resolve {
                host: host.to_string(),
                source,
            }),
            Err(_) => Err(SmtpError::Timeout {
                stage: Stage::Resolve,
                after: limit,
            }),
        };
    let addrs = trace.record("dns", resolved, |addrs| {
        let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
        format!("{host} -> {}", list.join(", "))
    })?;

    // Try each address in turn, all within the one connect budget.
    let mut last_error = None;
    for addr in &addrs {
        match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                // Commands are small and each batch is one write: do not let Nagle hold them.
                tcp.set_nodelay(true).map_err(|source| SmtpError::Io {
                    stage: Stage::Connect,
                    source,
                })?;
                trace.step("tcp", true, || format!("connected to {addr}"));
                return Ok(tcp);
            }
            Ok(Err(e)) => {
                trace.step("tcp", false, || format!("{addr}: {e}"));
                last_error = Some(e);
            }
            Err(_) => {
                trace.step("tcp", false, || format!("{addr}: timed out"));
                return Err(SmtpError::Timeout {
                    stage: Stage::Connect,
                    after: limit,
                });
            }
        }
    }
    Err(SmtpError::Connect {
        host: host.to_string(),
        port,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no address")),
    })
}

async fn start_tls(
    config: &SmtpClientConfig,
    tls_config: &Arc<rustls::ClientConfig>,
    tcp: TcpStream,
    trace: &mut Trace<'_>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, SmtpError> {
    let name = tls::server_name(&config.host)?;
    let connector = TlsConnector::from(tls_config.clone());
    let result = timed(
        Stage::TlsHandshake,
        config.timeouts.tls_handshake,
        connector.connect(name, tcp),
    )
    .await
    .map_err(|e| tls_failure(e, &config.host));
    trace.record("tls", result, |s| {
        tls::describe_session(s.get_ref().1, &config.host)
    })
}

/// A handshake that failed on certificates or protocol is a configuration matter (`Tls`);
/// one that failed on the network stays a network error.
fn tls_failure(error: SmtpError, host: &str) -> SmtpError {
    if let SmtpError::Io { source, .. } = &error
        && let Some(tls_error) = source
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return SmtpError::Tls {
            host: host.to_string(),
            source: tls_error.clone(),
        };
    }
    error
}

async fn ehlo(
    wire: &mut Wire,
    config: &SmtpClientConfig,
    trace: &mut Trace<'_>,
) -> Result<Capabilities, SmtpError> {
    wire.queue(Command::Ehlo(&config.hello_name));
    wire.flush(Stage::Ehlo, config.timeouts.command).await?;
    let reply = wire.read_reply(Stage::Ehlo, config.timeouts.command).await;
    let reply = match reply {
        Ok(r) if r.code == 250 => Ok(r),
        Ok(reply) => Err(SmtpError::Rejected {
            stage: Stage::Ehlo,
            reply,
        }),
        Err(e) => Err(e),
    };
    let reply = trace.record("ehlo", reply, |r| Capabilities::from_ehlo(r).to_string())?;
    Ok(Capabilities::from_ehlo(&reply))
}
