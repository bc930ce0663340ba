//! The real `recordings-backend` binary against mock-twilio, over real sockets.

mod faults;
mod range;
mod server;
mod support;
mod webhook;
