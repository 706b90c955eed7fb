//! Interoperability with mail software no one here wrote (being written).
