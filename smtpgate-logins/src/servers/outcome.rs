//! What the built-in parsers answer.

use std::net::IpAddr;

use crate::Service;

/// What a built-in parser made of a message it recognised.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome<'a> {
    Login {
        ip: IpAddr,
        service: Service,
        user: &'a [u8],
        server: &'static str,
    },
    /// A line of a known server that does not grant, with the reason.
    Refused(&'static str),
}
