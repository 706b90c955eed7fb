//! The relay's limits against slow and greedy clients, over real TCP: whole-line deadlines,
//! the minimum data rate, stress mode and the memory budget for messages in flight.

use std::time::{Duration, Instant};

use super::listener_tests::{Security, auth_plain, connect, listener_config, start, stop};

const TIMEOUT_REPLY: &str = "421 4.4.2 relay.test Timeout, closing connection\r\n";

#[tokio::test]
async fn a_command_line_dribbled_a_byte_at_a_time_times_out_as_a_whole() {
    let mut config = listener_config();
    config.command_timeout = Duration::from_millis(400);
    let relay = start(config, Security::None).await;
    let mut c = connect(relay.addr).await;
    c.reply().await;
    let started = Instant::now();
    // Each byte comes well within the timeout; the line never does.
    let dribble = async {
        for b in "EHLO slow.test".chars() {
            c.send_lossy(&b.to_string()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(700), dribble).await;
    assert_eq!(c.reply().await, TIMEOUT_REPLY);
    assert!(started.elapsed() < Duration::from_secs(2));
    // A client that completes its lines in time is not cut off.
    let mut ok = connect(relay.addr).await;
    ok.reply().await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ok.cmd("NOOP").await, "250 2.0.0 Ok\r\n");
    }
    assert!(stop(relay).await.timeouts >= 1);
}

#[tokio::test]
async fn message_content_below_the_minimum_rate_times_out() {
    let mut config = listener_config();
    config.trusted_networks = vec!["127.0.0.1".parse().unwrap()];
    config.data_timeout = Duration::from_millis(500);
    config.min_data_rate = 1000;
    let relay = start(config, Security::None).await;
    let mut c = connect(relay.addr).await;
    c.reply().await;
    c.cmd("HELO app.test").await;
    c.cmd("MAIL FROM:<a@b.test>").await;
    c.cmd("RCPT TO:<c@d.test>").await;
    assert!(c.cmd("DATA").await.starts_with("354 "));
    let started = Instant::now();
    // A byte every 100 ms earns 1 ms each: the session ends about 500 ms in.
    let dribble = async {
        loop {
            c.send_lossy("x").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(900), dribble).await;
    assert_eq!(c.reply().await, TIMEOUT_REPLY);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(relay.backend.stored.lock().unwrap().is_empty());
    stop(relay).await;
}

#[tokio::test]
async fn stress_mode_frees_slots_held_by_idle_clients() {
    let mut config = listener_config();
    config.max_connections = 4;
    config.stress_timeout = Duration::from_millis(300);
    let relay = start(config, Security::None).await;
    // One idle client of four slots: no stress, the normal 5 minutes apply.
    let mut first = connect(relay.addr).await;
    first.reply().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(first.cmd("NOOP").await, "250 2.0.0 Ok\r\n");
    // All four slots taken: every idle client gets the stress timeout, the first one too, and
    // keeps it when the first ones are gone and the stress is over.
    let started = Instant::now();
    let mut others = Vec::new();
    for _ in 0..3 {
        let mut c = connect(relay.addr).await;
        c.reply().await;
        others.push(c);
    }
    for (i, c) in others.iter_mut().chain([&mut first]).enumerate() {
        assert_eq!(c.reply().await, TIMEOUT_REPLY, "client {i}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    // The slots are free again, and the normal timeouts are back.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut late = connect(relay.addr).await;
    assert!(late.reply().await.starts_with("220 "));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(late.cmd("NOOP").await, "250 2.0.0 Ok\r\n");
    assert_eq!(stop(relay).await.timeouts, 4);
}

#[tokio::test]
async fn a_message_that_finds_no_memory_is_refused_after_its_dot() {
    let mut config = listener_config();
    // One step of the budget (256 KiB): the first message in DATA takes all of it.
    config.message_memory_budget = 256 * 1024;
    config.memory_wait = Duration::from_millis(200);
    let relay = start(config, Security::None).await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = connect(relay.addr).await;
        c.reply().await;
        c.cmd("EHLO app.test").await;
        assert!(c.cmd(&auth_plain()).await.starts_with("235 "));
        c.cmd("MAIL FROM:<app@example.com>").await;
        c.cmd("RCPT TO:<r@contoso.com>").await;
        clients.push(c);
    }
    let (mut first, mut second) = (clients.remove(0), clients.remove(0));
    assert!(first.cmd("DATA").await.starts_with("354 "));
    first.send("Subject: first\r\n\r\nfirst part\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The second message finds no memory: read and discarded, refused at its dot, and the
    // session goes on in step.
    assert!(second.cmd("DATA").await.starts_with("354 "));
    let line = format!("{}\r\n", "y".repeat(998));
    for _ in 0..100 {
        second.send(&line).await;
    }
    assert_eq!(
        second.cmd(".").await,
        "452 4.3.1 Insufficient system resources, try again later\r\n"
    );
    assert_eq!(second.cmd("NOOP").await, "250 2.0.0 Ok\r\n");
    // The first message is whole; once it is stored, the memory is free for the second.
    assert_eq!(first.cmd(".").await, "250 2.0.0 Ok: queued as Q1\r\n");
    second.cmd("MAIL FROM:<app@example.com>").await;
    second.cmd("RCPT TO:<r@contoso.com>").await;
    assert!(second.cmd("DATA").await.starts_with("354 "));
    second.send("Subject: second\r\n\r\nagain\r\n").await;
    assert_eq!(second.cmd(".").await, "250 2.0.0 Ok: queued as Q2\r\n");
    {
        let stored = relay.backend.stored.lock().unwrap();
        assert!(stored[0].message.ends_with("first part\r\n"));
        assert!(stored[1].message.ends_with("again\r\n"));
    }
    assert_eq!(stop(relay).await.memory_refusals, 1);
}
