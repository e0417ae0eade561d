//! Synchronous mode: each request runs to the end on the serving thread.

use std::sync::Arc;

use super::Dispatcher;
use crate::handler::run_request;
use crate::request::Request;
use crate::server::Server;

pub(crate) struct Synchronous;

impl Dispatcher for Synchronous {
    fn process(&self, server: &Arc<Server>, request: Request) {
        // A failed request was already reported through handle_error.
        let _ = run_request(server.handler(), request);
    }
}
