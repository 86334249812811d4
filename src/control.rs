//! The control plane: one tokio runtime owned by the daemon for coordination — signals, the
//! folder watcher's events and settle timers, the durable event consumer (webhook deliveries and exports when a job ends), the webhook
//! dispatcher, SSE fan-out and the retention timer. CPU stages keep their threads and
//! tiny_http its request threads; they reach the runtime only through the store's event bus
//! (stages → store → events → SSE, webhooks, exports) and the SSE writer hand-off.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::config::ConfigHandle;
use crate::events::Event;
use crate::model::Status;
use crate::sse::Streams;
use crate::store::Store;
use crate::webhooks::Webhooks;

/// How long tasks still running at shutdown get (webhook attempts cut off are resumed at the
/// next start).
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// What the daemon's signal loop should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// SIGHUP: reload the configuration and reopen the log file.
    Reload,
    /// SIGTERM or SIGINT: shut down.
    Stop,
}

/// The runtime and what runs on it.
pub struct ControlPlane {
    runtime: tokio::runtime::Runtime,
    /// The event streams, for the API.
    pub streams: Arc<Streams>,
    closing: watch::Sender<bool>,
    signals: [Signal; 3],
}

impl ControlPlane {
    /// Starts the runtime and its tasks. Signal handlers are installed here, before the daemon
    /// announces itself, so an early SIGHUP cannot kill it.
    pub fn start(store: Arc<Store>, config: Arc<ConfigHandle>) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("control")
            .enable_all()
            .build()?;
        let signals = {
            let _entered = runtime.enter();
            [
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::hangup())?,
            ]
        };
        let durable = store
            .events()
            .take_durable()
            .ok_or_else(|| anyhow::anyhow!("the store's durable events are consumed already"))?;
        let webhooks = {
            let _entered = runtime.enter();
            Webhooks::new(Arc::clone(&store), Arc::clone(&config))?
        };
        runtime.spawn(consume(durable, Arc::clone(&store), Arc::clone(&config), Arc::clone(&webhooks)));
        runtime.spawn(webhooks.run());
        runtime.spawn(crate::retention::run(Arc::clone(&store), config));
        let (closing, closing_rx) = watch::channel(false);
        let streams = Arc::new(Streams::new(runtime.handle().clone(), store, closing_rx));
        Ok(Self { runtime, streams, closing, signals })
    }

    /// The runtime, for tasks the daemon starts later (the folder watcher).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Blocks until the next SIGTERM, SIGINT or SIGHUP.
    pub fn next_signal(&mut self) -> SignalAction {
        let [term, int, hup] = &mut self.signals;
        self.runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => SignalAction::Stop,
                _ = int.recv() => SignalAction::Stop,
                _ = hup.recv() => SignalAction::Reload,
            }
        })
    }

    /// Ends every event stream (their connections close).
    pub fn close_streams(&self) {
        let _ = self.closing.send(true);
    }

    /// Stops the runtime; pending webhook deliveries stay in the store for the next start.
    pub fn shutdown(self) {
        self.close_streams();
        self.runtime.shutdown_timeout(SHUTDOWN_WAIT);
    }
}

/// Reads every stored job event in order: a status change may become a webhook delivery, and
/// a job that is done gets its exports.
async fn consume(
    mut events: mpsc::UnboundedReceiver<Arc<Event>>,
    store: Arc<Store>,
    config: Arc<ConfigHandle>,
    webhooks: Arc<Webhooks>,
) {
    while let Some(event) = events.recv().await {
        let Event::Status { job } = &*event else { continue };
        let (job, store, cfg, webhooks) =
            (job.clone(), Arc::clone(&store), config.get(), Arc::clone(&webhooks));
        let handled = tokio::task::spawn_blocking(move || {
            if job.status == Status::Done {
                match crate::exports::write_exports(&store, &cfg, job.id) {
                    Ok(paths) if paths.is_empty() => {}
                    Ok(paths) => tracing::info!(job = job.id, files = paths.len(), "exports written"),
                    Err(e) => tracing::error!(job = job.id, error = %e, "cannot write exports"),
                }
            }
            webhooks.drain();
        })
        .await;
        if let Err(e) = handled {
            tracing::error!(error = %e, "handling a job event failed");
        }
    }
}
