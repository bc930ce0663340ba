//! mock-twilio's tests: every route, every fault, observed by real clients over real sockets.

mod admin;
mod faults;
mod props;
mod routes;
mod support;
mod webhook;
