//! The queue between the async front and an engine's worker threads, the
//! same for V8 and QuickJS: the front sends a [`Job`] and awaits its
//! reply; each worker thread takes the next job when it is free.
//!
//! A worker can get stuck in code its engine cannot interrupt (QuickJS's
//! regular expressions never poll for interrupts: a catastrophic
//! backtracking pattern runs for hours). An engine that may get stuck
//! gives [`JobQueue::run`] a [`GiveUp`]: once a job has run that long the
//! front answers `JSExecutionTimeExceeded` itself and starts a worker in
//! the stuck one's place (at most as many replacements as the engine has
//! workers at a time); the stuck thread ends when its job does.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use charter_ledger::Tx;

use crate::api::{ConsensusView, JsError, JsRequest, JsResponse, Limits};
use crate::bundle::{AppBundle, EndpointDef};

pub(crate) type Reply = tokio::sync::oneshot::Sender<Result<(JsResponse, Tx), JsError>>;

/// One execution of an endpoint, and where its answer goes.
pub(crate) struct Job {
    pub bundle: Arc<AppBundle>,
    pub endpoint: EndpointDef,
    pub request: JsRequest,
    pub tx: Tx,
    /// What `ccf.consensus` reads during this execution.
    pub consensus: Option<Arc<dyn ConsensusView>>,
    /// The caller's tracing span (the node's request span, with the
    /// request id): the worker runs the job inside it, so `console.*`
    /// lines and the engine's own logs name the request.
    pub span: tracing::Span,
    pub reply: Reply,
    /// Tells the front when the job starts and settles, with it, whether
    /// a job that overran was given up on.
    pub ticket: Ticket,
}

// The states of a job the front may give up on.
/// Waiting in the queue for a worker.
const QUEUED: u8 = 4;
/// The front stopped waiting for a worker to take it: no worker may.
const WITHDRAWN: u8 = 5;
/// Taken by a worker.
const RUNNING: u8 = 0;
const FINISHED: u8 = 1;
/// Given up on, with no worker started in its place (too many stuck).
const ABANDONED: u8 = 2;
/// Given up on, and a new worker started in its place.
const REPLACED: u8 = 3;

/// A job's side of its settlement with the front.
pub(crate) struct Ticket {
    started: Option<tokio::sync::oneshot::Sender<()>>,
    state: Arc<AtomicU8>,
    /// The queue's count of workers stuck in jobs it gave up on.
    stuck: Arc<AtomicUsize>,
}

impl Ticket {
    /// The worker calls this when it starts the job: the front's
    /// give-up clock starts then, not while the job waits in the queue.
    /// Returns `false` when the front stopped waiting for a worker and
    /// answered already: the job is then not to be run.
    #[must_use]
    pub(crate) fn start(&mut self) -> bool {
        if self
            .state
            .compare_exchange(QUEUED, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if let Some(started) = self.started.take() {
            let _ = started.send(());
        }
        true
    }

    /// The worker calls this when the job is done, before replying.
    /// Returns whether the worker goes on serving: `false` when the front
    /// gave up on this job and started another worker in its place.
    pub(crate) fn finish(&self) -> bool {
        match self
            .state
            .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(given_up) => {
                self.stuck.fetch_sub(1, Ordering::AcqRel);
                given_up != REPLACED
            }
        }
    }
}

/// When the front stops waiting for a running job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GiveUp {
    /// How long the job may run, from its start.
    pub after: Duration,
    /// The time limit to name in the `Timeout` answer.
    pub limit_ms: u64,
}

impl GiveUp {
    /// For a time limit of `limit_ms`: the limit plus a margin for the
    /// engine to stop the script itself (it normally does within
    /// milliseconds of its deadline), half the limit and at least 1 s.
    pub(crate) fn after_limit(limit_ms: u64) -> GiveUp {
        GiveUp {
            after: Duration::from_millis(limit_ms.saturating_add((limit_ms / 2).max(1000))),
            limit_ms,
        }
    }

    /// [`GiveUp::after_limit`] for the time limit now in force.
    pub(crate) fn under(limits: &RwLock<Limits>) -> GiveUp {
        let limit_ms = limits.read().map(|l| l.max_execution_time_ms).unwrap_or(0);
        GiveUp::after_limit(limit_ms)
    }
}

/// Starts one more worker thread on the queue's receiving side.
pub(crate) type Respawn = Box<dyn Fn() + Send + Sync>;

/// The sending side, owned by the engine. Dropping it closes the channel,
/// which ends every worker loop.
pub(crate) struct JobQueue {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    /// Names the engine in errors ("V8", "QuickJS").
    engine: &'static str,
    /// Starts a worker in place of a stuck one; `None`: never give up.
    respawn: Option<Respawn>,
    /// Workers stuck in jobs the front gave up on.
    stuck: Arc<AtomicUsize>,
    /// Replacements started for stuck workers at most at a time.
    max_replaced: usize,
}

/// The receiving side, shared by the engine's worker threads.
#[derive(Clone)]
pub(crate) struct Jobs(Arc<Mutex<mpsc::Receiver<Job>>>);

impl Jobs {
    /// The next job, or `None` once the engine is gone.
    pub(crate) fn next(&self) -> Option<Job> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).recv().ok()
    }
}

impl JobQueue {
    pub(crate) fn new(engine: &'static str) -> (JobQueue, Jobs) {
        let (sender, receiver) = mpsc::channel();
        (
            JobQueue {
                sender: Mutex::new(Some(sender)),
                engine,
                respawn: None,
                stuck: Arc::new(AtomicUsize::new(0)),
                max_replaced: 0,
            },
            Jobs(Arc::new(Mutex::new(receiver))),
        )
    }

    /// Lets the front give up on stuck jobs (see [`GiveUp`]): `respawn`
    /// starts a worker in a stuck one's place, at most `max_replaced` at a
    /// time; past that the front still answers, and the queue waits for
    /// the stuck workers.
    pub(crate) fn set_respawn(&mut self, respawn: Respawn, max_replaced: usize) {
        self.respawn = Some(respawn);
        self.max_replaced = max_replaced;
    }

    /// Workers stuck now in jobs the front gave up on.
    pub(crate) fn stuck_workers(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// Queues an execution and waits for a worker's answer, or, with
    /// `give_up`, until the job has run for `give_up.after`.
    pub(crate) async fn run(
        &self,
        bundle: Arc<AppBundle>,
        endpoint: EndpointDef,
        request: JsRequest,
        tx: Tx,
        consensus: Option<Arc<dyn ConsensusView>>,
        give_up: Option<GiveUp>,
    ) -> Result<(JsResponse, Tx), JsError> {
        let (reply, mut answer) = tokio::sync::oneshot::channel();
        let (started, started_rx) = tokio::sync::oneshot::channel();
        let state = Arc::new(AtomicU8::new(QUEUED));
        let job = Job {
            bundle,
            endpoint,
            request,
            tx,
            consensus,
            span: tracing::Span::current(),
            reply,
            ticket: Ticket {
                started: Some(started),
                state: state.clone(),
                stuck: self.stuck.clone(),
            },
        };
        {
            let sender = self.sender.lock().unwrap_or_else(|e| e.into_inner());
            let Some(sender) = sender.as_ref() else {
                return Err(JsError::Internal("the JS engine is shut down".into()));
            };
            sender
                .send(job)
                .map_err(|_| JsError::Internal(format!("no {} worker is running", self.engine)))?;
        }
        let stopped = || {
            JsError::Internal(format!(
                "the {} worker stopped while handling the request",
                self.engine
            ))
        };
        let (Some(give_up), Some(respawn)) = (give_up, self.respawn.as_ref()) else {
            return answer.await.map_err(|_| stopped())?;
        };
        // Every worker busy (or stuck) for as long as a job may run: this
        // one is answered now, and withdrawn so that no worker runs it
        // later. A job dropped unstarted (the engine shutting down) is
        // answered below as stopped.
        if tokio::time::timeout(give_up.after, started_rx)
            .await
            .is_err()
            && state
                .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::error!(
                "no {} worker became free in {:?} (busy with or stuck in earlier requests); \
                 the request was not run",
                self.engine,
                give_up.after
            );
            return Err(JsError::Busy(format!(
                "no {} worker became free within {} ms: the engine is busy with (or stuck in) \
                 earlier requests; the request was not run, retry later",
                self.engine,
                give_up.after.as_millis()
            )));
        }
        if let Ok(result) = tokio::time::timeout(give_up.after, &mut answer).await {
            return result.map_err(|_| stopped())?;
        }
        let stuck_before = self.stuck.fetch_add(1, Ordering::AcqRel);
        let replace = stuck_before < self.max_replaced;
        let given_up = if replace { REPLACED } else { ABANDONED };
        if state
            .compare_exchange(RUNNING, given_up, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // It finished just now: its answer is on the way.
            self.stuck.fetch_sub(1, Ordering::AcqRel);
            return answer.await.map_err(|_| stopped())?;
        }
        if replace {
            tracing::warn!(
                "a {} worker is stuck {:?} into a request (code the engine cannot interrupt); \
                 answering the request and starting another worker in its place",
                self.engine,
                give_up.after
            );
            respawn();
        } else {
            tracing::error!(
                "a {} worker is stuck {:?} into a request and {} replacements are already \
                 running; answering the request, but the engine has fewer workers until \
                 the stuck ones finish",
                self.engine,
                give_up.after,
                self.max_replaced
            );
        }
        Err(JsError::Timeout(give_up.limit_ms))
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

#[cfg(test)]
mod tests {
    //! The give-up protocol with fake workers: threads that take jobs from
    //! the real queue and block until the test releases them.

    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{mpsc, Arc, Mutex};
    use std::time::{Duration, Instant};

    use charter_ledger::Store;

    use super::{GiveUp, JobQueue, Jobs};
    use crate::api::{JsError, JsRequest};
    use crate::bundle::AppBundle;

    /// Jobs with the body `count` that a fake worker ran.
    static COUNTED: AtomicUsize = AtomicUsize::new(0);

    /// A worker that answers `Internal("done")`, after waiting for the
    /// test's go-ahead when the request body is `block`. Counts the
    /// threads that ended because the front replaced them.
    fn fake_worker(jobs: Jobs, release: Arc<Mutex<mpsc::Receiver<()>>>, ended: Arc<AtomicUsize>) {
        std::thread::spawn(move || {
            while let Some(mut job) = jobs.next() {
                if !job.ticket.start() {
                    continue;
                }
                if job.request.body == b"count" {
                    COUNTED.fetch_add(1, Ordering::SeqCst);
                }
                if job.request.body == b"block" {
                    let _ = release.lock().unwrap().recv();
                }
                let go_on = job.ticket.finish();
                let _ = job.reply.send(Err(JsError::Internal("done".into())));
                if !go_on {
                    ended.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        });
    }

    #[tokio::test]
    async fn a_stuck_worker_is_given_up_on_and_replaced_up_to_the_cap() {
        let (mut queue, jobs) = JobQueue::new("Fake");
        let (release_tx, release_rx) = mpsc::channel();
        let release = Arc::new(Mutex::new(release_rx));
        let ended = Arc::new(AtomicUsize::new(0));
        let spawned = Arc::new(AtomicUsize::new(0));
        fake_worker(jobs.clone(), release.clone(), ended.clone());
        {
            let (jobs, release, ended, spawned) = (
                jobs.clone(),
                release.clone(),
                ended.clone(),
                spawned.clone(),
            );
            queue.set_respawn(
                Box::new(move || {
                    spawned.fetch_add(1, Ordering::SeqCst);
                    fake_worker(jobs.clone(), release.clone(), ended.clone());
                }),
                1,
            );
        }
        let bundle = Arc::new(
            AppBundle::from_parts(
                r#"{"endpoints": {"/x": {"post": {"js_module": "a.js", "js_function": "f"}}}}"#,
                BTreeMap::from([("a.js".to_string(), "export function f() {}".to_string())]),
            )
            .unwrap(),
        );
        let (endpoint, _) = bundle.find("POST", "/x").unwrap();
        let store = Arc::new(Store::new());
        let run = |body: &str, give_up_ms: u64| {
            let request = JsRequest {
                body: body.as_bytes().to_vec(),
                ..JsRequest::default()
            };
            queue.run(
                bundle.clone(),
                endpoint.clone(),
                request,
                store.begin(),
                None,
                Some(GiveUp {
                    after: Duration::from_millis(give_up_ms),
                    limit_ms: 7,
                }),
            )
        };

        // Stuck: answered as a timeout, and a worker starts in its place.
        assert_eq!(run("block", 50).await.unwrap_err(), JsError::Timeout(7));
        assert_eq!(spawned.load(Ordering::SeqCst), 1);
        assert_eq!(queue.stuck_workers(), 1);
        // The replacement serves.
        let served = run("", 10_000).await.unwrap_err();
        assert_eq!(served, JsError::Internal("done".into()));
        // Stuck again: answered, but the cap (1) allows no second
        // replacement.
        assert_eq!(run("block", 50).await.unwrap_err(), JsError::Timeout(7));
        assert_eq!(spawned.load(Ordering::SeqCst), 1);
        assert_eq!(queue.stuck_workers(), 2);
        // Every worker stuck: a new request is answered once it has waited
        // as long as a job may run, and is never run.
        assert!(matches!(run("count", 50).await, Err(JsError::Busy(_))));

        // Both stuck jobs end: the replaced worker's thread ends, the one
        // that was not replaced goes on serving.
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while queue.stuck_workers() > 0 || ended.load(Ordering::SeqCst) < 1 {
            assert!(Instant::now() < deadline, "stuck workers never settled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert_eq!(
            run("count", 10_000).await.unwrap_err(),
            JsError::Internal("done".into())
        );
        assert_eq!(
            COUNTED.load(Ordering::SeqCst),
            1,
            "the withdrawn job did not run"
        );
        let served = run("", 10_000).await.unwrap_err();
        assert_eq!(served, JsError::Internal("done".into()));
        // A job that finishes in time is answered by its worker.
        assert_eq!(
            run("", 10_000).await.unwrap_err(),
            JsError::Internal("done".into())
        );
    }
}
