//! What a plugin call's session guarantees, pinned: writes are one
//! transaction and a failed call leaves none of them; a plain read before the
//! call's first write runs on its own, read-only (lean sessions, the gate on),
//! and one that writes after all runs again inside the transaction; what one
//! call could leave in its session is bounded. Each with the gate on and off.

#![allow(clippy::unwrap_used)]

use serde_json::json;

use crate::sandbox::{SESSION_LEFTOVERS, Sandbox};
use crate::support::outcome;

async fn sandbox(gate: bool) -> Sandbox {
    let sandbox = Sandbox::with(|c| c.sandbox.statement_gate = gate).await;
    let client = sandbox.engine.test_db.client().await;
    // Set up by the operator: a counter the plugin may bump through a function
    // that writes, and a function that changes the session it runs in (what
    // a hole in the gate would let a plugin do).
    client
        .batch_execute(&format!(
            "CREATE TABLE public.counter (n int NOT NULL);
             INSERT INTO public.counter VALUES (0);
             CREATE FUNCTION public.bump() RETURNS int LANGUAGE sql
                 AS 'UPDATE public.counter SET n = n + 1 RETURNING n';
             CREATE FUNCTION public.leave_setting() RETURNS text LANGUAGE sql
                 AS $$SELECT set_config('assay_test.left', 'behind', false)$$;
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, UPDATE ON public.counter TO {role};
             GRANT EXECUTE ON FUNCTION public.bump(), public.leave_setting() TO {role};",
            role = sandbox.role
        ))
        .await
        .unwrap();
    sandbox
}

async fn counter(sandbox: &Sandbox) -> i32 {
    let client = sandbox.engine.test_db.client().await;
    client
        .query_one("SELECT n FROM public.counter", &[])
        .await
        .unwrap()
        .get(0)
}

/// Runs `script`; the attacker's outcome and each step's rows (or error code).
async fn run(sandbox: &Sandbox, script: &str) -> (String, Vec<serde_json::Value>) {
    let (report, steps) = sandbox.run(script).await;
    let steps = steps
        .into_iter()
        .map(|s| if s.ok { s.rows } else { json!(s.code) })
        .collect();
    (outcome(&report, "attacker").outcome.to_string(), steps)
}

async fn writes_are_one_transaction_and_undone_with_the_call(gate: bool) {
    let sandbox = sandbox(gate).await;
    let (ok, _) = run(&sandbox, "exec CREATE TABLE IF NOT EXISTS notes (n int)").await;
    assert_eq!(ok, "ok");
    let script = "query SELECT count(*)::int FROM notes\nexec INSERT INTO notes VALUES (1)\nexec INSERT INTO notes VALUES (2)";
    let (failed, _) = run(&sandbox, &format!("{script}\nfail")).await;
    assert_eq!(failed, "failed");
    let (ok, steps) = run(
        &sandbox,
        "query SELECT count(*)::int, count(DISTINCT xmin::text)::int FROM notes",
    )
    .await;
    assert_eq!(
        (ok.as_str(), &steps[0]),
        ("ok", &json!([[0, 0]])),
        "gate {gate}"
    );
    let (ok, _) = run(&sandbox, script).await;
    assert_eq!(ok, "ok");
    let (_, steps) = run(
        &sandbox,
        "query SELECT count(*)::int, count(DISTINCT xmin::text)::int FROM notes",
    )
    .await;
    assert_eq!(
        steps[0],
        json!([[2, 1]]),
        "gate {gate}: both rows, one transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_one_transaction_and_undone_with_the_call_gate_on() {
    writes_are_one_transaction_and_undone_with_the_call(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_one_transaction_and_undone_with_the_call_gate_off() {
    writes_are_one_transaction_and_undone_with_the_call(false).await;
}

/// The one thing a plugin can observe of the lean session: a plain read before
/// the call's first write runs in a read-only transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_before_the_first_write_run_on_their_own() {
    let read_only = "query SELECT current_setting('transaction_read_only')";
    for gate in [true, false] {
        let sandbox = sandbox(gate).await;
        let (ok, steps) = run(
            &sandbox,
            &format!(
                "{read_only}\n{read_only}\nexec UPDATE public.counter SET n = n\n{read_only}\nquery SELECT n FROM public.counter"
            ),
        )
        .await;
        assert_eq!(ok, "ok");
        let alone = if gate { "on" } else { "off" };
        assert_eq!(
            steps,
            vec![
                json!([[alone]]),
                json!([[alone]]),
                json!(null),
                json!([["off"]]),
                json!([[0]])
            ],
            "gate {gate}"
        );
    }
}

/// A read that writes (through a function) is refused by the server where it
/// ran alone, and run again in the call's transaction: it takes effect once,
/// and not at all if the call then fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_writes_runs_again_in_the_transaction() {
    for gate in [true, false] {
        let sandbox = sandbox(gate).await;
        let (failed, _) = run(&sandbox, "query SELECT public.bump()\nfail").await;
        assert_eq!(failed, "failed");
        assert_eq!(
            counter(&sandbox).await,
            0,
            "gate {gate}: undone with the call"
        );
        let (ok, steps) = run(
            &sandbox,
            "query SELECT public.bump()\nquery SELECT current_setting('transaction_read_only')",
        )
        .await;
        assert_eq!(ok, "ok");
        assert_eq!(steps, vec![json!([[1]]), json!([["off"]])], "gate {gate}");
        assert_eq!(counter(&sandbox).await, 1, "gate {gate}: written once");
    }
}

/// After a failed statement the rest of the call fails as in an aborted
/// transaction, whether the statement ran alone or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_read_the_call_is_aborted_either_way() {
    for gate in [true, false] {
        let sandbox = sandbox(gate).await;
        let (_, steps) = run(
            &sandbox,
            "query SELECT 1 / 0\nexec UPDATE public.counter SET n = 5\nquery SELECT 1",
        )
        .await;
        assert_eq!(
            steps,
            vec![json!("22012"), json!("25P02"), json!("25P02")],
            "gate {gate}"
        );
        assert_eq!(counter(&sandbox).await, 0);
    }
}

/// A lean session is not reset after every call. Should something change it
/// anyway (here an operator's function that calls `set_config`, standing for
/// a hole in the gate), the change lasts at most `RESET_EVERY_CALLS` calls of
/// the same plugin; with the gate off every call is reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_session_keeps_is_bounded() {
    use assay::capability::sql::session::RESET_EVERY_CALLS;
    let left = "SELECT coalesce(current_setting('assay_test.left', true), '')";
    for gate in [true, false] {
        let sandbox = sandbox(gate).await;
        let (ok, _) = run(&sandbox, "query SELECT public.leave_setting()").await;
        assert_eq!(ok, "ok");
        let mut calls = 1;
        while sandbox.probe(left).await == json!("behind") {
            calls += 1;
            assert!(
                calls <= RESET_EVERY_CALLS,
                "gate {gate}: the setting outlived {RESET_EVERY_CALLS} calls"
            );
        }
        if gate {
            assert!(calls > 1, "a lean session is not reset after every call");
        } else {
            assert_eq!(calls, 1, "with the gate off every call is reset");
        }
        assert_eq!(
            sandbox.probe(SESSION_LEFTOVERS).await,
            json!("settings 0 listening 0 cursors 0 advisory 0 prepared 0")
        );
    }
}
