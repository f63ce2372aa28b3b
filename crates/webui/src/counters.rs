//! `GET /json`'s answers: one read of Redis, and one answer made of it, for
//! all the requests that wait for it.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::http::StatusCode;
use dockercoins::redis::Redis;
use serde::Serialize;
use tokio::sync::oneshot;

/// Reads the counters for `GET /json`, sharing each read of Redis, and the
/// answer made of it, between the requests that wait for it.
///
/// Why: reading Redis once per request, as the classic app does, costs more
/// than all the rest of a request, and under load the reads only queue for
/// the one connection anyway. Here a request that comes while no read is in
/// flight starts one at once; one that comes while a read is in flight waits
/// for the next read, which starts as soon as that one ends, and shares it
/// with every request that came meanwhile; the answer, JSON, is written once
/// for them all. So no answer is older than its request, a lone request costs
/// one read as before, and at most one read is in flight however many
/// requests come.
///
/// The reads run in a task of their own, so a request that goes away (its
/// client hangs up) never cancels a read that others wait for.
#[derive(Clone)]
pub(crate) struct SharedReads {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    waiting: Mutex<Waiting>,
}

#[derive(Default)]
struct Waiting {
    /// Whether the task that reads is running.
    reading: bool,
    /// The requests waiting for the next read.
    for_next: Vec<oneshot::Sender<Answer>>,
}

impl SharedReads {
    pub(crate) fn new(redis: Redis) -> Self {
        SharedReads {
            inner: Arc::new(Inner {
                redis,
                waiting: Mutex::default(),
            }),
        }
    }

    /// The answer, from a read that started after this call did.
    pub(crate) async fn read(&self) -> Answer {
        let (answer, answered) = oneshot::channel();
        {
            let mut waiting = self.lock();
            waiting.for_next.push(answer);
            if !waiting.reading {
                waiting.reading = true;
                tokio::spawn(self.clone().read_while_waited_for());
            }
        }
        // Dropped unanswered only if the runtime stops meanwhile.
        answered
            .await
            .unwrap_or_else(|_| Answer::unavailable("the read was cancelled"))
    }

    /// Reads for the requests waiting, again and again, until none waits.
    async fn read_while_waited_for(self) {
        // Should the task end any other way (a panic, the runtime stopping),
        // the requests waiting get a 503 and the next request reads anew.
        let mut ended = Ended {
            reads: &self,
            normally: false,
        };
        let mut answering = Vec::new();
        loop {
            {
                let mut waiting = self.lock();
                if waiting.for_next.is_empty() {
                    waiting.reading = false;
                    ended.normally = true;
                    return;
                }
                mem::swap(&mut waiting.for_next, &mut answering);
            }
            let answer = Answer::of_read(crate::read_counters(&self.inner.redis).await);
            for request in answering.drain(..) {
                // A request gone meanwhile does not need its answer.
                let _ = request.send(answer.clone());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Nothing panics while holding it; a poisoned lock is still sound.
        self.inner
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Ends the reading task: unless it ended normally, no read is in flight any
/// more, and the requests waiting are dropped (they answer 503).
struct Ended<'a> {
    reads: &'a SharedReads,
    normally: bool,
}

impl Drop for Ended<'_> {
    fn drop(&mut self) {
        if !self.normally {
            let mut waiting = self.reads.lock();
            waiting.reading = false;
            waiting.for_next.clear();
        }
    }
}

/// `/json`'s answer: the counters as JSON, or a JSON error with its reason.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) json: Bytes,
}

impl Answer {
    fn of_read(read: Result<crate::Counters, redis::RedisError>) -> Answer {
        match read {
            Ok(counters) => Answer::json(StatusCode::OK, &counters),
            Err(err) => {
                tracing::warn!("cannot read the counters: {err}");
                metrics::counter!("webui_redis_errors_total").increment(1);
                Answer::unavailable(&err.to_string())
            }
        }
    }

    fn unavailable(reason: &str) -> Answer {
        let body = serde_json::json!({ "error": format!("redis unreachable: {reason}") });
        Answer::json(StatusCode::SERVICE_UNAVAILABLE, &body)
    }

    fn json(status: StatusCode, body: &impl Serialize) -> Answer {
        match serde_json::to_vec(body) {
            Ok(json) => Answer {
                status,
                json: json.into(),
            },
            // Numbers and strings always make JSON; still, no panic here.
            Err(err) => {
                let error = format!("cannot write the answer as JSON: {err}");
                tracing::error!("{error}");
                Answer {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    json: serde_json::json!({ "error": error }).to_string().into(),
                }
            }
        }
    }
}
