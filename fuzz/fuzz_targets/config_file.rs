//! The configuration file: any text is either settings or one line of
//! error, never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpgate::cli::{
    args::RunArgs,
    settings::{from_parts, ConfigFile},
};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let result = ConfigFile::parse(text).and_then(|file| from_parts(RunArgs::default(), file, 0));
    if let Err(error) = result {
        let message = format!("{error:#}");
        assert!(
            !message.contains('\n'),
            "an error of more than one line: {message}"
        );
    }
});
