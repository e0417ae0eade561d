//! Concurrency models (Python's mix-ins): how an accepted request gets run.
//! The server loop is the same for all of them; each model only decides
//! where `run_request` happens and what close must wait for.

mod sync;

use std::sync::Arc;

use crate::config::Concurrency;
use crate::request::Request;
use crate::server::Server;

pub(crate) trait Dispatcher: Send + Sync {
    /// Takes ownership of an accepted request and gets it handled.
    fn process(&self, server: &Arc<Server>, request: Request);

    /// Once per serve_forever turn (Python's ForkingMixIn reaps children here).
    fn service_actions(&self, _server: &Server) {}

    /// After handle_request timed out.
    fn handle_timeout(&self, _server: &Server) {}

    /// Server close: wait for, or let go of, requests still running.
    fn close(&self, _server: &Server) {}
}

pub(crate) fn dispatcher_for(mode: Concurrency) -> Box<dyn Dispatcher> {
    match mode {
        Concurrency::Sync => Box::new(sync::Synchronous),
        // Config::new refuses the others before a server can exist.
        other => unreachable!("concurrency mode {} has no dispatcher", other.name()),
    }
}
