//! The queue between the async front and an engine's worker threads, the
//! same for V8 and QuickJS: the front sends a [`Job`] and awaits its
//! reply; each worker thread takes the next job when it is free.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use charter_ledger::Tx;

use crate::api::{ConsensusView, JsError, JsRequest, JsResponse};
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
}

/// The sending side, owned by the engine. Dropping it closes the channel,
/// which ends every worker loop.
pub(crate) struct JobQueue {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    /// Names the engine in errors ("V8", "QuickJS").
    engine: &'static str,
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
            },
            Jobs(Arc::new(Mutex::new(receiver))),
        )
    }

    /// Queues an execution and waits for a worker's answer.
    pub(crate) async fn run(
        &self,
        bundle: Arc<AppBundle>,
        endpoint: EndpointDef,
        request: JsRequest,
        tx: Tx,
        consensus: Option<Arc<dyn ConsensusView>>,
    ) -> Result<(JsResponse, Tx), JsError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            bundle,
            endpoint,
            request,
            tx,
            consensus,
            span: tracing::Span::current(),
            reply,
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
        answer.await.map_err(|_| {
            JsError::Internal(format!(
                "the {} worker stopped while handling the request",
                self.engine
            ))
        })?
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        self.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
