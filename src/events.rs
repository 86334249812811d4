//! The event bus: the store publishes every job status change and progress step after it is
//! written, and consumers read them in one direction (store → events → SSE, webhooks, exports).
//!
//! Two kinds of consumer: live subscribers (SSE streams) share a bounded broadcast channel and
//! may lag (a lagging stream re-reads the job from the store); the control plane takes the one
//! durable receiver, an unbounded queue that holds every event from the store's opening on, so
//! webhooks and exports never miss a job's end, even one recorded before the runtime started.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::model::Job;

/// Events a live subscriber may fall behind by before it is told it lagged.
const LIVE_CAPACITY: usize = 1024;

/// Something that happened to a job, after it was stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Event {
    /// The job's status changed (or it was created); the job as stored then.
    Status { job: Box<Job> },
    /// A running job made progress.
    Progress { id: i64, progress: f32 },
    /// The job was deleted.
    Deleted { id: i64 },
}

impl Event {
    /// The job this event is about.
    pub fn job_id(&self) -> i64 {
        match self {
            Event::Status { job } => job.id,
            Event::Progress { id, .. } | Event::Deleted { id } => *id,
        }
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Status { .. } => "status",
            Event::Progress { .. } => "progress",
            Event::Deleted { .. } => "deleted",
        }
    }
}

/// The publishing side, owned by the store.
pub struct Bus {
    live: broadcast::Sender<Arc<Event>>,
    durable: mpsc::UnboundedSender<Arc<Event>>,
    durable_rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<Event>>>>,
}

impl Default for Bus {
    fn default() -> Self {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        let (durable, rx) = mpsc::unbounded_channel();
        Self { live, durable, durable_rx: Mutex::new(Some(rx)) }
    }
}

impl Bus {
    /// Publishes an event to every consumer; never blocks.
    pub fn publish(&self, event: Event) {
        let event = Arc::new(event);
        // No live subscriber is not an error.
        let _ = self.live.send(Arc::clone(&event));
        let _ = self.durable.send(event);
    }

    /// Publishes an event of another node to live subscribers only: that node's own durable
    /// consumer makes its webhooks and exports.
    pub fn publish_live(&self, event: Event) {
        let _ = self.live.send(Arc::new(event));
    }

    /// A live subscription, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.live.subscribe()
    }

    /// The durable receiver with every event since the bus was made; `None` once taken.
    pub fn take_durable(&self) -> Option<mpsc::UnboundedReceiver<Arc<Event>>> {
        self.durable_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Live subscribers right now.
    pub fn subscribers(&self) -> usize {
        self.live.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_durable_consumers_see_events_in_order() {
        let bus = Bus::default();
        bus.publish(Event::Deleted { id: 1 });
        let mut live = bus.subscribe();
        bus.publish(Event::Progress { id: 2, progress: 50.0 });
        let mut durable = bus.take_durable().unwrap();
        assert!(bus.take_durable().is_none(), "one durable consumer");
        assert_eq!(durable.try_recv().unwrap().job_id(), 1, "kept from before anyone listened");
        assert_eq!(durable.try_recv().unwrap().name(), "progress");
        assert_eq!(*live.try_recv().unwrap(), Event::Progress { id: 2, progress: 50.0 });
        assert!(live.try_recv().is_err(), "a live subscriber sees events from its subscription on");
        assert_eq!(bus.subscribers(), 1);
    }
}
