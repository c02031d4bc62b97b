//! radsight-hl7-report's messages read back by hl7apy (Python, `RADSIGHT_TEST_PYTHON`): parsed
//! against its strict HL7 v2.5.1 ORU^R01 structure, validated, and compared field by field
//! with the result that was written.
//!
//! A missing `RADSIGHT_TEST_PYTHON` FAILS these tests; nothing is skipped. scripts/test.sh sets
//! it up (`ensure_python`, hl7apy from tests/python/requirements.txt).
//!
//! Run: `RADSIGHT_TEST_PYTHON=$PWD/.venv-test/bin/python cargo test -p radsight-hl7-report`

mod fixture;
mod hl7apy;
