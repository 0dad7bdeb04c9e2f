//! Builds `src/peek.c` against the librdkafka tree rdkafka-sys built, when
//! there is one (see that file for why and how it stays correct).

use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(weir_peek)");
    println!("cargo::rerun-if-changed=src/peek.c");
    println!("cargo::rerun-if-env-changed=DEP_RDKAFKA_ROOT");
    // rdkafka-sys sets its `root` (the tree it built or links statically)
    // for the bundled and static-external builds; a system librdkafka has
    // no private headers to compile against.
    let Some(root) = std::env::var_os("DEP_RDKAFKA_ROOT").map(PathBuf::from) else {
        return;
    };
    let src = root.join("src");
    if !src.join("rdkafka_msg.h").is_file() || !root.join("config.h").is_file() {
        return;
    }
    cc::Build::new()
        .file("src/peek.c")
        .include(&src)
        .include(&root)
        .warnings(false)
        .compile("weir_peek");
    println!("cargo::rustc-cfg=weir_peek");
}
