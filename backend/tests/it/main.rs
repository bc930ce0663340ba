//! The real `recordings-backend` binary against mock-twilio, over real sockets.

mod faults;
mod props;
mod range;
mod server;
mod support;
mod webhook;
