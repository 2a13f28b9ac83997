//! Component and Configuration YAML, as `--resources-path` and `--config` files give it:
//! any text is refused with an error or read, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let file = Path::new("fuzz.yaml");
    let _ = sidecar::resources::components_in(text, file, "app");
    let _ = sidecar::resources::configuration_in(text, file);
});
