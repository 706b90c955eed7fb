use super::*;

fn pw(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

#[tokio::test]
async fn hashes_and_verifies() {
    let checks = PasswordChecks::new(1, DEFAULT_WAIT);
    let phc = checks.hash(&pw("correct horse")).await.unwrap();
    assert!(phc.starts_with("$argon2id$"), "{phc}");
    assert_eq!(
        checks.verify(None, &phc, &pw("correct horse")).await,
        Ok(true)
    );
    assert_eq!(checks.verify(None, &phc, &pw("wrong")).await, Ok(false));
    // Remembered: answered again without a thread.
    assert_eq!(checks.verify(None, &phc, &pw("wrong")).await, Ok(false));
    assert_eq!(checks.verify(None, "not a hash", &pw("x")).await, Ok(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_refused_not_queued_and_one_client_cannot_take_every_turn() {
    let checks = PasswordChecks::new(1, Duration::from_millis(50));
    let phc = checks.hash(&pw("correct horse")).await.unwrap();
    let attacker: IpAddr = "192.0.2.7".parse().unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (checks, phc) = (checks.clone(), phc.clone());
        tasks.push(tokio::spawn(async move {
            checks
                .verify(Some(attacker), &phc, &pw(&format!("guess-{i}")))
                .await
        }));
    }
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(Busy) => busy += 1,
            Ok(ok) => assert!(!ok),
        }
    }
    assert!(busy >= 40 - PER_CLIENT as usize, "{busy} of 40 refused");
    // The attacker's turns are given back.
    assert!(lock(&checks.inner.clients).is_empty());
    let other: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        checks.verify(Some(other), &phc, &pw("correct horse")).await,
        Ok(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_password_at_once_is_checked_once() {
    let checks = PasswordChecks::new(1, Duration::from_millis(200));
    let phc = checks.hash(&pw("correct horse")).await.unwrap();
    let client: IpAddr = "192.0.2.8".parse().unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (checks, phc) = (checks.clone(), phc.clone());
        tasks.push(tokio::spawn(async move {
            checks
                .verify(Some(client), &phc, &pw("correct horse"))
                .await
        }));
    }
    for t in tasks {
        // 16 logins from one address: more than PER_CLIENT, yet none refused.
        assert_eq!(t.await.unwrap(), Ok(true));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_guessed_wrong_gets_no_place_in_the_queue() {
    let checks = PasswordChecks::new(1, Duration::from_secs(5));
    let phc = checks.hash(&pw("correct horse")).await.unwrap();
    let guesser: IpAddr = "192.0.2.9".parse().unwrap();
    let owner: IpAddr = "192.0.2.10".parse().unwrap();
    assert_eq!(
        checks.verify(Some(guesser), &phc, &pw("guess-1")).await,
        Ok(false)
    );
    // Keep the only thread busy for a while.
    let turn = checks.inner.turns.try_take().unwrap();
    let slow = {
        let checks = checks.clone();
        tokio::spawn(async move {
            checks
                .run(turn, || std::thread::sleep(Duration::from_millis(300)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    assert_eq!(
        checks.verify(Some(guesser), &phc, &pw("guess-2")).await,
        Err(Busy)
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "refused at once"
    );
    // A client not seen guessing waits for the thread and gets its answer.
    assert_eq!(
        checks.verify(Some(owner), &phc, &pw("correct horse")).await,
        Ok(true)
    );
    slow.await.unwrap().unwrap();
}

#[test]
fn ipv6_clients_are_counted_by_their_64() {
    assert_eq!(
        client_block("2001:db8:1:2::9".parse().unwrap()),
        client_block("2001:db8:1:2:ffff::1".parse().unwrap())
    );
    assert_eq!(
        client_block("::ffff:192.0.2.1".parse().unwrap()),
        "192.0.2.1".parse::<IpAddr>().unwrap()
    );
}
