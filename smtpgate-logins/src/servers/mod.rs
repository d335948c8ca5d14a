//! The built-in parsers, one module per server family.
//!
//! Each parser first checks the program tag, then the start of the message,
//! and then the whole structure of a success line up to its end. They share
//! one rule: a field a client could have influenced (the user name) must
//! never decide which address is read. So a marker that occurs once in a
//! genuine line must occur exactly once, and a user name delimited by spaces
//! must not contain one.

mod courier;
mod cyrus;
mod dovecot;
mod fields;
mod outcome;
mod qpopper;
mod uw;

pub(crate) use outcome::Outcome;

/// Runs the built-in parsers on one message; `None` if none of them knows
/// the program or the kind of message.
pub(crate) fn recognise<'a>(program: &[u8], message: &'a [u8]) -> Option<Outcome<'a>> {
    dovecot::recognise(program, message)
        .or_else(|| courier::recognise(program, message))
        .or_else(|| cyrus::recognise(program, message))
        .or_else(|| uw::recognise(program, message))
        .or_else(|| qpopper::recognise(program, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_programs_are_not_recognised() {
        assert_eq!(
            recognise(b"postfix/smtpd", b"Login user=a host=[192.0.2.1]"),
            None
        );
        assert_eq!(
            recognise(b"sshd", b"login: [192.0.2.1] a b User logged in"),
            None
        );
    }
}
