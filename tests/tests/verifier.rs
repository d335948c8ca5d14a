//! The verifier's work on the kernel program, which grows with every path
//! the header walk can take: each program must stay well inside the
//! instruction budget the verifier allows (one million since Linux 5.2),
//! so that the walk can grow and an older kernel's verifier, which prunes
//! less well, still accepts it.

use anyhow::{ensure, Result};

use smtpgate::gate::attach::Variant;
use smtpgate_tests::testrun::LoadedGate;

/// A quarter of the verifier's limit.
const BUDGET: u32 = 250_000;

#[test]
fn each_program_stays_within_a_quarter_of_the_verifier_budget() -> Result<()> {
    for variant in Variant::ALL {
        let gate = LoadedGate::variant(0, &[25], variant)?;
        for (name, count) in gate.verified_instruction_counts()? {
            eprintln!("{variant:?} {name}: the verifier processed {count} instructions");
            ensure!(
                count < BUDGET,
                "{variant:?} {name}: {count} instructions verified, over the budget of {BUDGET}"
            );
        }
    }
    Ok(())
}
