//! Read lanes (`capability/sql/lanes.rs`): reads a plugin's calls run on
//! their own share its connections, pipelined. Pinned here: sharing really
//! happens, and turns off; every read gets its own answer and its own
//! failure; a slow read does not hold up the reads behind it; calls that
//! write are not starved by a stream of reads; a read past the byte cap
//! leaves the plugin's later reads working; a read abandoned at its call's
//! deadline takes its connection with it.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use assay::runtime::call::{CallFailure, CallLimits};
use assay::runtime::plugin::{CallOutput, Document};
use serde_json::{Value, json};

use crate::sandbox::Sandbox;
use crate::support::TestEngine;

/// An engine with the attacker plugin, `connections` of its own and the
/// gate on (lean sessions), adjusted further by `adjust`.
async fn engine(connections: u32, adjust: impl FnOnce(&mut assay::config::Config)) -> Sandbox {
    let sandbox = Sandbox::with(|c| {
        c.sandbox.connections_per_plugin = connections;
        c.limits.concurrent_calls = 256;
        adjust(c);
    })
    .await;
    sandbox
        .engine
        .test_db
        .client()
        .await
        .batch_execute(&format!(
            "CREATE TABLE public.hits (n int NOT NULL);
             GRANT USAGE ON SCHEMA public TO {role};
             GRANT SELECT, INSERT ON public.hits TO {role};",
            role = sandbox.role
        ))
        .await
        .unwrap();
    sandbox
}

/// One call of the attacker on `script`, straight to the plugin (no run
/// stored); each step's finding data.
async fn call(engine: &TestEngine, script: &str) -> Result<Vec<Value>, CallFailure> {
    let plugin = engine.registry.get("attacker").unwrap();
    let limits = CallLimits::for_plugin(&engine.config.limits, "attacker");
    let document = Document {
        id: uuid::Uuid::new_v4().to_string(),
        kind: "attack".into(),
        text: script.into(),
        metadata: "{}".into(),
    };
    match plugin
        .call(&engine.runtime, &limits, Default::default(), document)
        .await?
    {
        CallOutput::Findings(found) => Ok(found
            .iter()
            .map(|f| serde_json::from_str(&f.data).unwrap())
            .collect()),
        CallOutput::Processed(..) => panic!("the attacker is an analyzer"),
    }
}

/// The most reads the attacker's lanes carried at once, and the most lanes
/// open at once, while `work` ran.
async fn lanes_during<T>(engine: &TestEngine, work: impl Future<Output = T>) -> (T, usize, usize) {
    let pool = engine
        .registry
        .get("attacker")
        .unwrap()
        .capabilities
        .sql
        .pool()
        .clone();
    let done = Arc::new(AtomicBool::new(false));
    let (most_reads, most_lanes) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watcher = tokio::spawn({
        let (done, most_reads, most_lanes) = (
            Arc::clone(&done),
            Arc::clone(&most_reads),
            Arc::clone(&most_lanes),
        );
        async move {
            while !done.load(Ordering::Relaxed) {
                let (lanes, reads) = pool.lanes();
                most_lanes.fetch_max(lanes, Ordering::Relaxed);
                most_reads.fetch_max(reads, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    let out = work.await;
    done.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    (
        out,
        most_reads.load(Ordering::Relaxed),
        most_lanes.load(Ordering::Relaxed),
    )
}

/// `n` calls at once, call `i` running `script(i)`.
async fn at_once(
    sandbox: &Arc<Sandbox>,
    n: usize,
    script: impl Fn(usize) -> String,
) -> Vec<Result<Vec<Value>, CallFailure>> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let (sandbox, script) = (Arc::clone(sandbox), script(i));
            tokio::spawn(async move { call(&sandbox.engine, &script).await })
        })
        .collect();
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    results
}

fn read_of(i: usize) -> String {
    format!(r#"params [{{"int": {i}}}] SELECT $1::bigint * 2, pg_backend_pid()"#)
}

/// Many calls reading at once over two connections: some lane carried more
/// reads than there were lanes (they were pipelined), every call got its
/// own answer back, and no more than two server processes answered them.
/// With `sandbox.shared_reads = false` no lane is ever opened, and the
/// answers are the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_share_connections_and_each_gets_its_own_answer() {
    for shared in [true, false] {
        let sandbox = Arc::new(engine(2, |c| c.sandbox.shared_reads = shared).await);
        let mut pids = std::collections::BTreeSet::new();
        let mut most = (0, 0);
        for _round in 0..10 {
            let (results, reads, lanes) =
                lanes_during(&sandbox.engine, at_once(&sandbox, 24, read_of)).await;
            most = (most.0.max(reads), most.1.max(lanes));
            for (i, result) in results.into_iter().enumerate() {
                let steps = result.unwrap();
                assert_eq!(steps[0]["ok"], json!(true), "{:?}", steps[0]);
                assert_eq!(
                    steps[0]["rows"][0][0],
                    json!(2 * i as i64),
                    "shared {shared}"
                );
                pids.insert(steps[0]["rows"][0][1].as_i64().unwrap());
            }
        }
        assert!(pids.len() <= 2, "shared {shared}: {pids:?}");
        if shared {
            assert!(
                most.0 > most.1 && most.1 >= 1,
                "reads were pipelined: at most {} reads on {} lanes",
                most.0,
                most.1
            );
        } else {
            assert_eq!(most, (0, 0), "no lane with shared_reads off");
        }
    }
}

/// Reads that fail share lanes with reads that do not: each fails or
/// succeeds on its own (every pipelined read has its own sync point), and
/// a call after a failed read is aborted as its own transaction would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_read_fails_only_its_own_call() {
    let sandbox = Arc::new(engine(1, |_| {}).await);
    for _round in 0..5 {
        let results = at_once(&sandbox, 32, |i| {
            if i % 2 == 0 {
                format!("query SELECT 1 / 0\n{}", read_of(i))
            } else {
                read_of(i)
            }
        })
        .await;
        for (i, result) in results.into_iter().enumerate() {
            let steps = result.unwrap();
            if i % 2 == 0 {
                assert_eq!(steps[0]["error"]["code"], json!("22012"));
                assert_eq!(steps[1]["error"]["code"], json!("25P02"));
            } else {
                assert_eq!(steps[0]["rows"][0][0], json!(2 * i as i64));
            }
        }
    }
}

/// A read that takes long (here until its statement timeout) does not hold
/// up the plugin's reads that come after it: they go to another
/// connection, and all of them are answered while it still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_read_does_not_hold_up_the_reads_behind_it() {
    let sandbox = Arc::new(
        engine(2, |c| {
            c.limits.statement_timeout_ms = 3_000;
        })
        .await,
    );
    // Warm both connections' statement caches and the instance pool.
    for r in at_once(&sandbox, 8, read_of).await {
        r.unwrap();
    }
    let slow = tokio::spawn({
        let sandbox = Arc::clone(&sandbox);
        async move {
            call(
                &sandbox.engine,
                "query SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b",
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..40 {
        let steps = call(&sandbox.engine, &read_of(i)).await.unwrap();
        assert_eq!(steps[0]["rows"][0][0], json!(2 * i as i64));
    }
    assert!(
        !slow.is_finished(),
        "the fast reads were all answered while the slow one ran"
    );
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow[0]["error"]["kind"], json!("timeout"), "{:?}", slow[0]);
}

/// While many calls keep reading — enough that the plugin's one connection
/// always has reads in flight — calls that write still get it, in turn,
/// well within the connect timeout: lanes stop taking reads while a writer
/// waits, so the lane drains and gives the connection up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_are_not_starved_by_reads() {
    let sandbox = Arc::new(engine(1, |c| c.database.connect_timeout_ms = 3_000).await);
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..16)
        .map(|_| {
            let (sandbox, stop) = (Arc::clone(&sandbox), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut reads = 0;
                while !stop.load(Ordering::Relaxed) {
                    let steps = call(
                        &sandbox.engine,
                        "query SELECT count(*) FROM generate_series(1, 30000)",
                    )
                    .await
                    .unwrap();
                    assert_eq!(steps[0]["ok"], json!(true), "{:?}", steps[0]);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..10 {
        let steps = call(
            &sandbox.engine,
            "query SELECT 1\nexec INSERT INTO public.hits VALUES (1)",
        )
        .await
        .unwrap();
        assert_eq!(steps[1]["ok"], json!(true), "{:?}", steps[1]);
    }
    stop.store(true, Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(
        reads > 20,
        "the readers kept reading meanwhile ({reads} reads)"
    );
    let client = sandbox.engine.test_db.client().await;
    let hits: i64 = client
        .query_one("SELECT count(*) FROM public.hits", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(hits, 10);
}

/// A read whose result runs past the byte cap fails as too large; so may
/// the reads sharing its connection when the result was large enough to kill
/// it (saying so), while other reads are answered; and the plugin's reads
/// after it work, on the same single connection or a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_past_the_byte_cap_leaves_later_reads_working() {
    let sandbox = Arc::new(engine(1, |c| c.sandbox.max_result_bytes = 64 * 1024).await);
    for _round in 0..3 {
        let results = at_once(&sandbox, 12, |i| {
            if i == 5 {
                "query SELECT repeat('x', 3000000)".to_string()
            } else {
                read_of(i)
            }
        })
        .await;
        for (i, result) in results.into_iter().enumerate() {
            let step = &result.unwrap()[0];
            if i == 5 {
                assert_eq!(step["error"]["kind"], json!("too-large"), "{step:?}");
            } else if step["ok"] == json!(true) {
                assert_eq!(step["rows"][0][0], json!(2 * i as i64));
            } else {
                assert_eq!(step["error"]["kind"], json!("too-large"), "{step:?}");
                let message = step["error"]["message"].as_str().unwrap();
                assert!(message.contains("another read of the plugin"), "{message}");
            }
        }
        for i in 0..20 {
            let steps = call(&sandbox.engine, &read_of(i)).await.unwrap();
            assert_eq!(
                steps[0]["rows"][0][0],
                json!(2 * i as i64),
                "{:?}",
                steps[0]
            );
        }
    }
}

/// A read that runs for seconds (the gate refuses `pg_sleep`).
const SLOW_READ: &str =
    "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b";

/// A read abandoned at its call's deadline (its statement still running on
/// the server, its answer still to come) takes its lane's connection with
/// it: the reads waiting meanwhile and those after it run on another server
/// process, never on the one still busy with the abandoned statement, and
/// each gets its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_abandoned_at_the_deadline_takes_its_connection_with_it() {
    let sandbox = Arc::new(
        engine(1, |c| {
            c.limits.call_timeout_ms = 500;
            c.limits.statement_timeout_ms = 10_000;
        })
        .await,
    );
    call(&sandbox.engine, &read_of(0)).await.unwrap();
    let abandoned = tokio::spawn({
        let sandbox = Arc::clone(&sandbox);
        async move { call(&sandbox.engine, &format!("query {SLOW_READ}")).await }
    });
    let observer = sandbox.engine.test_db.client().await;
    // The server process running it (looked for until the call's deadline).
    let mut sleeper = None;
    for _ in 0..50 {
        sleeper = observer
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE query = $1 AND state = 'active'",
                &[&SLOW_READ],
            )
            .await
            .unwrap()
            .map(|row| row.get::<_, i32>(0));
        if sleeper.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sleeper = sleeper.expect("the slow read runs on the server");
    // Reads that come while the abandoned one still holds the only connection.
    let waiting = at_once(&sandbox, 6, |i| read_of(100 + i)).await;
    match abandoned.await.unwrap() {
        Err(CallFailure::Timeout(_)) => {}
        other => panic!("the sleeping call should have run out of time: {other:?}"),
    }
    let mut later = Vec::new();
    for i in 0..10 {
        later.push(call(&sandbox.engine, &read_of(200 + i)).await);
    }
    // Those that waited may have run out of time themselves (the only
    // connection was the abandoned read's until its deadline); none may
    // have another's answer. Those after it all work.
    let waiting = (100..)
        .zip(waiting)
        .filter_map(|(key, result)| match result {
            Err(CallFailure::Timeout(_)) => None,
            answered => Some((key, answered)),
        });
    for (key, result) in waiting.chain((200..).zip(later)) {
        let steps = result.unwrap();
        let row = &steps[0]["rows"][0];
        assert_eq!(row[0], json!(2 * key as i64), "{:?}", steps[0]);
        assert_ne!(
            row[1],
            json!(sleeper),
            "read {key} ran on the connection of the abandoned read"
        );
    }
}
