//! Empty: this package exists only to pin and fetch the seL4 kernel sources.
