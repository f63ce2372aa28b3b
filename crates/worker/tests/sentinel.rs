//! The worker and the web UI against a highly available Redis of real
//! redis-server processes (a primary, two replicas, three Sentinels): the
//! primary is SIGKILLed twice in a row (the first one killed comes back
//! before the second kill), Sentinel promotes a replica, both services follow
//! it without a restart, and every unit the worker did is counted once.

use std::time::{Duration, Instant};

use dockercoins::CancellationToken;
use dockercoins::redis::{Redis, RedisOptions};
use dockercoins::test_support::{
    Process, RedisHa, RedisServer, Running, free_port, get, spawn, start_sentinel,
};
use redis::AsyncCommands;

const WORKER: &str = env!("CARGO_BIN_EXE_worker");
/// This file's share of the tests' loopback ports.
const PORTS: std::ops::Range<u16> = 32700..32800;
/// Times the primary is killed in a row.
const KILLS: usize = 2;

/// A connection to the server at `port`.
async fn connect(port: u16) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a test redis")
}

/// `hashes` and the number of wallet entries on the server at `port`.
async fn counted(port: u16) -> (u64, u64) {
    let mut redis = connect(port).await;
    let hashes: Option<u64> = redis.get("hashes").await.expect("GET hashes");
    let wallet: u64 = redis.hlen("wallet").await.expect("HLEN wallet");
    (hashes.unwrap_or(0), wallet)
}

/// The replicas attached to the server at `port` (`INFO replication`).
async fn connected_replicas(port: u16) -> u64 {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
        return 0;
    };
    let Ok(mut redis) = client.get_multiplexed_async_connection().await else {
        return 0;
    };
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut redis)
        .await
        .unwrap_or_default();
    info.lines()
        .find_map(|line| line.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// `hashes` as the web UI's `/json` answers it, if it answers 200.
async fn webui_hashes(webui: &Running) -> Option<u64> {
    let (status, _, body) = get(&webui.url("/json")).await;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["hashes"].as_u64()
}

/// Waits until `hashes` on the server at `port` has grown by more than 100
/// units; returns what it was at the start.
async fn wait_for_counting(what: &str, limit: Duration, port: u16) -> u64 {
    let (start, _) = counted(port).await;
    wait_for(what, limit, || async {
        counted(port).await.0 > start + 100
    })
    .await;
    start
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_and_webui_follow_failovers_and_lose_no_unit() {
    let mut ha = RedisHa::start().await;
    let sentinels = ha.sentinels();
    let (_rng, _hasher, mut worker) = start_worker(&sentinels).await;
    let webui = spawn(
        "webui",
        &[
            "--redis-url",
            "redis://127.0.0.1:1",
            "--redis-sentinels",
            &sentinels,
        ],
        webui::run,
    )
    .await;

    wait_for(
        "hashes counted before the failover",
        Duration::from_secs(10),
        || async { webui_hashes(&webui).await.unwrap_or(0) > 100 },
    )
    .await;

    let mut new = 0;
    for round in 1..=KILLS {
        // A crash of the primary: Sentinel promotes one of the replicas.
        let old = ha.primary_port().await.expect("a primary");
        ha.server(old).kill().await;
        wait_for("a new primary", Duration::from_secs(30), || async {
            ha.primary_port().await.is_some_and(|port| port != old)
        })
        .await;
        new = ha.primary_port().await.expect("a primary");
        let changed = format!("redis primary changed: 127.0.0.1:{old} -> 127.0.0.1:{new}");
        wait_for(
            &format!("kill {round}: the worker's log line {changed:?}"),
            Duration::from_secs(20),
            || async { worker.lines().iter().any(|line| line.contains(&changed)) },
        )
        .await;

        // Both carry on with the new primary, without a restart.
        let after_failover = wait_for_counting(
            &format!("kill {round}: hashes counted after the failover"),
            Duration::from_secs(30),
            new,
        )
        .await;
        wait_for(
            &format!("kill {round}: the web UI reading the new primary"),
            Duration::from_secs(20),
            || async { webui_hashes(&webui).await.unwrap_or(0) > after_failover },
        )
        .await;

        if round == KILLS {
            break;
        }
        // The killed server comes back as it was started, a primary with no
        // replica: it refuses writes until the Sentinels make it a replica.
        ha.server(old).restart().await;
        wait_for(
            &format!("kill {round}: both replicas back with the new primary"),
            Duration::from_secs(30),
            || async { ha.replicas_of(new).await == 2 },
        )
        .await;
    }

    check_counts(&mut worker, new).await;
    webui.stop().await.expect("webui stops");
}

/// The window `min-replicas-to-write` leaves open: the replicas stop
/// answering, the primary still takes writes for `min-replicas-max-lag`, and
/// dies. The batches written meanwhile reached no replica: `WAIT` said so, the
/// worker kept them and sends them again to the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_no_replica_confirmed_are_sent_again_after_a_failover() {
    let mut ha = RedisHa::start().await;
    let (_rng, _hasher, mut worker) = start_worker(&ha.sentinels()).await;
    let old = ha.primary_port().await.expect("a primary");
    wait_for("hashes counted", Duration::from_secs(10), || async {
        counted(old).await.0 > 100
    })
    .await;
    let replicas: Vec<u16> = ha
        .servers
        .iter()
        .map(|s| s.port)
        .filter(|p| *p != old)
        .collect();
    for port in &replicas {
        ha.server(*port).signal("STOP");
    }
    let (before, _) = counted(old).await;
    wait_for(
        "a batch written while no replica answers",
        Duration::from_secs(10),
        || async { counted(old).await.0 > before },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ha.server(old).kill().await;
    for port in &replicas {
        ha.server(*port).signal("CONT");
    }
    wait_for("a new primary", Duration::from_secs(30), || async {
        ha.primary_port().await.is_some_and(|port| port != old)
    })
    .await;
    let new = ha.primary_port().await.expect("a primary");
    wait_for_counting(
        "hashes counted after the failover",
        Duration::from_secs(30),
        new,
    )
    .await;
    let lines = check_counts(&mut worker, new).await;
    let batches = lines
        .iter()
        .find(|line| line.contains("batches: "))
        .expect("the batches' summary line");
    assert!(
        !batches.contains(" 0 not confirmed by a replica"),
        "some batches were not confirmed: {batches}"
    );
}

/// The case `WAIT 1` does not cover: the Sentinels promote the replica that
/// did not confirm the last batches. Replica B stops replicating (pointed at
/// a port where nothing listens: it keeps what it had) while replica A
/// confirms every batch; A may never be promoted (`replica-priority 0`), so
/// when the primary dies B becomes the primary without the batches of those
/// seconds. The worker's next batch meets the gap, and the batches B lacks
/// are sent again: every unit is counted once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_a_promoted_replica_lacks_are_sent_again() {
    let mut ha = RedisHa::start().await;
    let (_rng, _hasher, mut worker) = start_worker(&ha.sentinels()).await;
    let (old, b) = lagging_replica(&ha).await;
    ha.server(old).kill().await;
    wait_for("replica B promoted", Duration::from_secs(30), || async {
        ha.primary_port().await == Some(b)
    })
    .await;
    let lines = check_counts(&mut worker, b).await;
    assert!(
        lines
            .iter()
            .any(|line| line.contains("redis lacks batches")),
        "no batch found missing on the new primary"
    );
    let batches = lines
        .iter()
        .find(|line| line.contains("batches: "))
        .expect("the batches' summary line");
    assert!(
        !batches.contains(" 0 restored"),
        "no batch restored: {batches}"
    );
}

/// A Sentinel with an old view (one that was cut off from the others, or
/// that restarted from its first configuration) names a Redis that is still
/// a primary but no longer the one, with an older config epoch. Listed first,
/// it must not lead the worker there: the highest epoch wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_with_an_old_view_is_outvoted() {
    let ha = RedisHa::start().await;
    let old = ha.primary_port().await.expect("a primary");
    // A failover, as after a cut: it raises the Sentinels' config epoch.
    let mut sentinel = connect(ha.sentinel_ports[0]).await;
    let _: () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(RedisHa::PRIMARY)
        .query_async(&mut sentinel)
        .await
        .expect("SENTINEL FAILOVER");
    wait_for("a new primary", Duration::from_secs(30), || async {
        ha.primary_port().await.is_some_and(|port| port != old)
    })
    .await;
    let new = ha.primary_port().await.expect("a primary");
    // The old view: a primary of its own (taking writes, so that a batch sent
    // there would show) and a Sentinel at config epoch 0 that names it.
    let stale = RedisServer::start_with(free_port(), Vec::new()).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (_stale_sentinel, stale_port) = start_sentinel(dir.path(), "stale", stale.port, 1);
    let sentinels = format!("127.0.0.1:{stale_port},{}", ha.sentinels());

    let (_rng, _hasher, mut worker) = start_worker(&sentinels).await;
    wait_for_counting(
        "hashes counted on the new primary",
        Duration::from_secs(20),
        new,
    )
    .await;
    let lines = check_counts(&mut worker, new).await;
    assert_eq!(
        counted(stale.port).await,
        (0, 0),
        "a batch went to the old view's primary"
    );
    let found = format!("redis primary {} is at 127.0.0.1:{new}", RedisHa::PRIMARY);
    assert!(
        lines.iter().any(|line| line.contains(&found)),
        "the worker's log names the primary of the highest epoch ({found:?})"
    );
    assert!(
        !lines
            .iter()
            .any(|line| line.contains("redis primary changed")),
        "the worker never moved: {lines:?}"
    );
}

/// The case `WAIT 1` does not cover, set up while a worker mines: replica A
/// may never be promoted (`replica-priority 0`) and confirms every batch,
/// replica B stops replicating (pointed at a port where nothing listens: it
/// keeps what it had) and misses 200 units and more. Returns the primary's
/// and B's ports.
async fn lagging_replica(ha: &RedisHa) -> (u16, u16) {
    let old = ha.primary_port().await.expect("a primary");
    let replicas: Vec<u16> = ha
        .servers
        .iter()
        .map(|s| s.port)
        .filter(|p| *p != old)
        .collect();
    let (a, b) = (replicas[0], replicas[1]);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-priority")
        .arg("0")
        .query_async(&mut connect(a).await)
        .await
        .expect("CONFIG SET replica-priority");
    wait_for("hashes counted", Duration::from_secs(10), || async {
        counted(old).await.0 > 100
    })
    .await;
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(1)
        .query_async(&mut connect(b).await)
        .await
        .expect("REPLICAOF on B");
    let (frozen, _) = counted(b).await;
    wait_for(
        "batches confirmed by replica A alone",
        Duration::from_secs(5),
        || async { counted(old).await.0 > frozen + 200 },
    )
    .await;
    (old, b)
}

/// rng and hasher in this process, and the worker binary finding Redis
/// through the Sentinels at `sentinels`.
async fn start_worker(sentinels: &str) -> (Running, Running, Process) {
    start_worker_with(sentinels, &[]).await
}

/// As [`start_worker`], with more environment variables.
async fn start_worker_with(sentinels: &str, extra: &[(&str, &str)]) -> (Running, Running, Process) {
    let rng = spawn("rng", &["--delay", "0"], rng::run).await;
    let hasher = spawn("hasher", &["--delay", "0"], hasher::run).await;
    let (rng_url, hasher_url) = (rng.url(""), hasher.url(""));
    let mut env = vec![
        ("RNG_URL", rng_url.as_str()),
        ("HASHER_URL", hasher_url.as_str()),
        // Nothing listens there: only the Sentinels lead to Redis.
        ("REDIS_URL", "redis://127.0.0.1:1"),
        ("REDIS_SENTINELS", sentinels),
        ("REDIS_SENTINEL_PRIMARY", RedisHa::PRIMARY),
        ("WORKER_SLEEP", "5ms"),
        ("WORKER_CONCURRENCY", "2"),
        ("WORKER_FLUSH_INTERVAL", "200ms"),
    ];
    env.extend_from_slice(extra);
    let mut worker = Process::start(WORKER, PORTS, &env);
    worker.wait_for("/readyz").await;
    (rng, hasher, worker)
}

/// Stops the worker; checks that `hashes` on the primary at `port` is every
/// unit it did, exactly, and the wallet every coin it found. Returns its log.
async fn check_counts(worker: &mut Process, port: u16) -> Vec<String> {
    // The stop's last batch needs a primary that takes writes: after a
    // failover, one whose replica has attached (`min-replicas-to-write 1`)
    // and that has counted a batch since.
    wait_for(
        "a replica on the primary",
        Duration::from_secs(30),
        || async { connected_replicas(port).await > 0 },
    )
    .await;
    let (before, _) = counted(port).await;
    wait_for("a batch counted", Duration::from_secs(30), || async {
        counted(port).await.0 > before
    })
    .await;
    let (status, _) = worker.signal_and_wait("TERM").await;
    assert!(status.success(), "worker exited with {status}");
    let lines = worker.lines();
    let done = lines
        .iter()
        .find_map(|line| {
            let (before, after) = line.split_once(" units of work done in all, ")?;
            let units = before.split_whitespace().last()?.parse::<u64>().ok()?;
            let taken = after.split_whitespace().next()?.parse::<u64>().ok()?;
            Some((units, taken))
        })
        .expect("the worker's summary line");
    let coins = lines
        .iter()
        .filter(|line| line.contains("Coin found: "))
        .count() as u64;
    let (hashes, wallet) = counted(port).await;
    assert_eq!(done.0, done.1, "units done == units redis took: {done:?}");
    assert_eq!(hashes, done.0, "hashes == units the worker did, exactly");
    assert_eq!(wallet, coins, "wallet entries == coins the worker found");
    lines
}

/// A primary without the replica it needs (`min-replicas-to-write 1`) refuses
/// every batch (`NOREPLICAS`): the worker counts the refusals, keeps the work,
/// and once writes are allowed again every unit is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_a_primary_refuses_are_kept_and_counted_once_later() {
    let redis = RedisServer::start_with(
        free_port(),
        vec!["--min-replicas-to-write".to_owned(), "1".to_owned()],
    )
    .await;
    let rng = spawn("rng", &["--delay", "0"], rng::run).await;
    let hasher = spawn("hasher", &["--delay", "0"], hasher::run).await;
    let (rng_url, hasher_url, redis_url) = (rng.url(""), hasher.url(""), redis.url());
    let config = dockercoins::parse_from::<worker::Config, _, _>(
        "worker",
        worker::ABOUT,
        [
            "worker",
            "--rng-url",
            &rng_url,
            "--hasher-url",
            &hasher_url,
            "--redis-url",
            &redis_url,
            "--sleep",
            "5ms",
            "--flush-interval",
            "100ms",
        ],
    )
    .expect("valid arguments")
    .service;
    let shutdown = CancellationToken::new();
    let mining = tokio::spawn(worker::mine(
        config,
        "worker-a".to_owned(),
        Redis::new(&RedisOptions::at(&redis_url)).expect("redis url"),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut client = redis.client().await;
    let hashes: Option<u64> = client.get("hashes").await.expect("GET hashes");
    assert_eq!(hashes, None, "a primary without its replica took a batch");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("min-replicas-to-write")
        .arg("0")
        .query_async(&mut client)
        .await
        .expect("CONFIG SET");
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let summary = mining.await.expect("task").expect("mining");
    let hashes: Option<u64> = client.get("hashes").await.expect("GET hashes");
    assert!(summary.batches_refused > 0, "{summary:?}");
    assert!(
        summary.batches_resent >= summary.batches_refused,
        "{summary:?}"
    );
    assert_eq!(hashes, Some(summary.units), "{summary:?}");
    assert_eq!(summary.flushed, summary.units, "{summary:?}");
}

/// The worker's exit line: `N units of work done in all, C counted in redis,
/// U not confirmed by a replica, L lost`, as (N, C, U, L).
fn exit_line(lines: &[String]) -> (u64, u64, u64, u64) {
    lines
        .iter()
        .find_map(|line| {
            let (before, after) = line.split_once(" units of work done in all, ")?;
            let units = before.split_whitespace().last()?.parse().ok()?;
            let numbers: Vec<u64> = after
                .split(", ")
                .filter_map(|part| part.split_whitespace().next()?.parse().ok())
                .collect();
            match numbers[..] {
                [counted, unconfirmed, lost] => Some((units, counted, unconfirmed, lost)),
                _ => None,
            }
        })
        .expect("the worker's exit line")
}

/// A worker stopped (SIGTERM: a drain, a rollout) just as the primary dies,
/// and the Sentinels promote the replica that lacks its last batches: it does
/// not leave with them. Its stop waits for the new primary
/// (WORKER_STOP_TIMEOUT, 25 s under compose.ha.yaml), meets the gap there, sends the missing batches
/// again, and only then exits: every unit is counted, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_during_a_failover_hands_its_batches_to_the_new_primary() {
    let mut ha = RedisHa::start().await;
    // As compose.ha.yaml sets it: the failover, and the new primary's wait
    // for a replica (min-replicas-to-write), take up to some 10 s.
    let (_rng, _hasher, mut worker) =
        start_worker_with(&ha.sentinels(), &[("WORKER_STOP_TIMEOUT", "25s")]).await;
    let (old, b) = lagging_replica(&ha).await;
    ha.server(old).kill().await;
    let (status, took) = worker.signal_and_wait("TERM").await;
    assert!(status.success(), "worker exited with {status}");
    eprintln!("the worker stopped {took:?} after SIGTERM, in the middle of the failover");
    wait_for("replica B promoted", Duration::from_secs(30), || async {
        ha.primary_port().await == Some(b)
    })
    .await;
    let lines = worker.lines();
    let (units, counted_units, unconfirmed, lost) = exit_line(&lines);
    let (hashes, _) = counted(b).await;
    assert_eq!(hashes, units, "hashes on the new primary == units done");
    assert_eq!(
        (counted_units, unconfirmed, lost),
        (units, 0, 0),
        "every unit counted, none lost"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.contains("redis lacks batches")),
        "the stop did not meet the gap on the new primary"
    );
}

/// `REDIS_WAIT_TIMEOUT` longer than a reply's usual 2 s: a batch that no
/// replica confirms gets `WAIT`'s own answer (0 replicas) after 3 s, counted
/// as unconfirmed and sent again, not a reply timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_timeout_of_3s_gets_waits_answer() {
    let ha = RedisHa::start().await;
    let (_rng, _hasher, mut worker) =
        start_worker_with(&ha.sentinels(), &[("REDIS_WAIT_TIMEOUT", "3s")]).await;
    let primary = ha.primary_port().await.expect("a primary");
    wait_for_counting("hashes counted", Duration::from_secs(10), primary).await;
    let replicas: Vec<&RedisServer> = ha.servers.iter().filter(|s| s.port != primary).collect();
    for replica in &replicas {
        replica.signal("STOP");
    }
    tokio::time::sleep(Duration::from_millis(4500)).await;
    for replica in &replicas {
        replica.signal("CONT");
    }
    let lines = check_counts(&mut worker, primary).await;
    assert!(
        !lines.iter().any(|line| line.contains("timed out")),
        "a reply timed out: {:?}",
        lines
            .iter()
            .filter(|l| l.contains("timed out"))
            .collect::<Vec<_>>()
    );
    let batches = lines
        .iter()
        .find(|line| line.contains("batches: "))
        .expect("the batches' summary line");
    assert!(
        !batches.contains(" 0 not confirmed by a replica"),
        "no batch waited for WAIT's answer: {batches}"
    );
}

/// `total_connections_received` of the server (Redis or Sentinel) at `port`.
async fn connections_received(port: u16) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut connect(port).await)
        .await
        .expect("INFO stats");
    info.lines()
        .find_map(|line| line.trim().strip_prefix("total_connections_received:"))
        .and_then(|n| n.parse().ok())
        .expect("total_connections_received")
}

/// The worker asks the Sentinels every second, and the primary its `ROLE`,
/// on connections it keeps: over 3 s of mining, no Sentinel and not the
/// primary sees more than the reads of this test itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinels_are_asked_on_kept_connections() {
    let ha = RedisHa::start().await;
    let (_rng, _hasher, mut worker) = start_worker(&ha.sentinels()).await;
    let primary = ha.primary_port().await.expect("a primary");
    wait_for_counting("hashes counted", Duration::from_secs(10), primary).await;
    let mut ports = ha.sentinel_ports.clone();
    ports.push(primary);
    let mut before = Vec::new();
    for port in &ports {
        before.push(connections_received(*port).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (port, before) in ports.iter().zip(before) {
        // One connection: this test's own read.
        let opened = connections_received(*port).await - before;
        assert!(
            opened <= 1,
            "{opened} connections opened to 127.0.0.1:{port} in 3 s"
        );
    }
    check_counts(&mut worker, primary).await;
}
