use super::*;

const NOW: i64 = 1_000_000;

#[test]
fn idle_connections_are_not_known_and_cost_no_timer() {
    let mut s = Schedule::new(10);
    assert_eq!(s.plan(NOW), Plan::default());
    assert_eq!((s.known(), s.next_timer()), (0, None));
}

#[test]
fn due_mail_starts_one_sender_and_a_finished_idle_sender_is_forgotten() {
    let mut s = Schedule::new(10);
    assert!(!s.due(7, NOW, NOW));
    assert!(
        !s.due(7, NOW - 5, NOW),
        "a second wake-up does not queue it twice"
    );
    assert_eq!(s.plan(NOW).start, vec![7]);
    assert_eq!(s.plan(NOW).start, Vec::<i64>::new(), "nothing new is due");
    assert_eq!(s.sessions(), 1);
    s.finished(7, None, NOW);
    assert_eq!((s.sessions(), s.known()), (0, 0));
}

#[test]
fn deferred_mail_waits_for_its_timer() {
    let mut s = Schedule::new(10);
    s.due(3, NOW + 60_000, NOW);
    s.due(3, NOW + 90_000, NOW);
    assert_eq!(s.next_timer(), Some(NOW + 60_000), "the earliest time wins");
    assert!(s.plan(NOW + 59_999).start.is_empty());
    assert_eq!(s.plan(NOW + 60_000).start, vec![3]);
}

#[test]
fn an_earlier_due_time_replaces_the_timer_and_the_old_one_fires_nothing() {
    let mut s = Schedule::new(10);
    s.due(3, NOW + 60_000, NOW);
    s.due(3, NOW + 1_000, NOW);
    assert_eq!(s.plan(NOW + 1_000).start, vec![3]);
    s.finished(3, None, NOW + 2_000);
    assert!(
        s.plan(NOW + 60_000).start.is_empty(),
        "the replaced timer is stale"
    );
}

#[test]
fn news_for_a_running_sender_wakes_it_instead_of_starting_another() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    assert_eq!(s.plan(NOW).start, vec![1]);
    assert!(s.due(1, NOW, NOW), "the running sender is to be woken");
    assert!(s.plan(NOW).start.is_empty());
    // The sender ended without looking again: the news is not lost.
    s.finished(1, None, NOW);
    assert_eq!(s.plan(NOW).start, vec![1]);
}

#[test]
fn news_seen_by_a_sender_does_not_restart_it_after_it_ends() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    s.plan(NOW);
    s.due(1, NOW, NOW);
    s.looking(1);
    s.finished(1, None, NOW);
    assert!(s.plan(NOW).start.is_empty());
    assert_eq!(s.known(), 0);
}

#[test]
fn a_timer_for_a_connection_with_a_sender_wakes_that_sender() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    s.plan(NOW);
    s.due(1, NOW + 500, NOW);
    let plan = s.plan(NOW + 500);
    assert_eq!((plan.start, plan.wake), (vec![], vec![1]));
}

#[test]
fn a_backlog_ramps_up_to_the_connection_limit_and_no_further() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    assert_eq!(s.plan(NOW).start, vec![1]);
    assert_eq!(s.after_batch(1, true, 3), AfterBatch::Continue);
    assert_eq!(s.plan(NOW).start, vec![1]);
    assert_eq!(s.after_batch(1, true, 3), AfterBatch::Continue);
    assert_eq!(s.plan(NOW).start, vec![1]);
    assert_eq!(s.after_batch(1, true, 3), AfterBatch::Continue);
    assert!(s.plan(NOW).start.is_empty(), "three sessions is its limit");
    assert_eq!(s.sessions(), 3);
}

#[test]
fn a_lowered_limit_starts_no_new_sender() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    s.plan(NOW);
    s.after_batch(1, true, 1);
    assert!(s.plan(NOW).start.is_empty());
}

#[test]
fn senders_beyond_a_lowered_limit_end() {
    let mut s = Schedule::new(10);
    s.due(1, NOW, NOW);
    s.plan(NOW);
    s.after_batch(1, true, 2);
    assert_eq!(s.plan(NOW).start, vec![1]);
    assert_eq!(
        s.after_batch(1, true, 1),
        AfterBatch::Yield,
        "two senders, limit one"
    );
    assert_eq!(s.after_batch(1, true, 1), AfterBatch::Continue);
    assert_eq!(s.sessions(), 1);
}

#[test]
fn the_global_cap_is_never_exceeded() {
    let mut s = Schedule::new(4);
    for c in 0..10 {
        s.due(c, NOW, NOW);
    }
    assert_eq!(s.plan(NOW).start, vec![0, 1, 2, 3]);
    assert_eq!(s.waiting(), 6);
    assert!(s.plan(NOW).start.is_empty());
    s.finished(2, None, NOW);
    assert_eq!(
        s.plan(NOW).start,
        vec![4],
        "a freed session goes to the next in line"
    );
}

#[test]
fn a_backlog_yields_its_session_to_waiting_connections_and_queues_behind_them() {
    let mut s = Schedule::new(2);
    s.due(100, NOW, NOW);
    s.plan(NOW);
    s.after_batch(100, true, 3);
    assert_eq!(
        s.plan(NOW).start,
        vec![100],
        "alone, the backlog uses every session"
    );
    s.due(1, NOW, NOW);
    s.due(2, NOW, NOW);
    assert_eq!(s.after_batch(100, true, 3), AfterBatch::Yield);
    assert_eq!(
        s.after_batch(100, true, 3),
        AfterBatch::Continue,
        "a session is free again: no need to give up the second"
    );
    assert_eq!(
        s.plan(NOW).start,
        vec![1],
        "the first mailbox in line takes it"
    );
    assert_eq!(s.after_batch(100, true, 3), AfterBatch::Yield);
    assert_eq!(s.plan(NOW).start, vec![2]);
    s.finished(1, None, NOW);
    assert_eq!(
        s.plan(NOW).start,
        vec![100],
        "then the backlog's turn again"
    );
}

#[test]
fn without_waiting_connections_a_backlog_keeps_its_session() {
    let mut s = Schedule::new(1);
    s.due(100, NOW, NOW);
    s.plan(NOW);
    assert_eq!(s.after_batch(100, true, 3), AfterBatch::Continue);
}

#[test]
fn round_robin_under_the_cap_serves_every_connection_in_turn() {
    // 1 session, 3 connections with backlogs: each gets a batch in turn.
    let mut s = Schedule::new(1);
    for c in [1, 2, 3] {
        s.due(c, NOW, NOW);
    }
    let mut order = Vec::new();
    let mut running = s.plan(NOW).start;
    for _ in 0..6 {
        let c = running[0];
        order.push(c);
        assert_eq!(s.after_batch(c, true, 3), AfterBatch::Yield);
        running = s.plan(NOW).start;
        assert_eq!(running.len(), 1);
    }
    assert_eq!(order, vec![1, 2, 3, 1, 2, 3]);
}

#[test]
fn ten_thousand_idle_connections_leave_nothing_behind() {
    let mut s = Schedule::new(64);
    let mut started = 0;
    for c in 0..10_000 {
        s.due(c, NOW, NOW);
    }
    loop {
        let plan = s.plan(NOW);
        if plan.start.is_empty() {
            break;
        }
        started += plan.start.len();
        assert!(s.sessions() <= 64);
        for c in plan.start {
            s.after_batch(c, false, 3);
            s.finished(c, None, NOW);
        }
    }
    assert_eq!(started, 10_000);
    assert_eq!((s.known(), s.sessions(), s.next_timer()), (0, 0, None));
}

#[test]
fn idle_senders_keep_their_sessions_while_sessions_are_free() {
    let mut s = Schedule::new(2);
    s.due(1, NOW, NOW);
    assert_eq!(s.plan(NOW).start, vec![1]);
    // Mail for another connection came due; the dispatcher has not planned yet.
    s.due(2, NOW, NOW);
    assert_eq!(s.waiting(), 1);
    assert!(
        !s.starved(),
        "a session is free: connection 1 keeps its own"
    );
    assert_eq!(s.plan(NOW).start, vec![2]);
    s.due(3, NOW, NOW);
    assert!(s.starved(), "both sessions taken and connection 3 waits");
}
