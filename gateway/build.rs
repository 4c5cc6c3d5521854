//! Checks that the dashboard's vendored assets are there before `include_bytes!` needs them, so
//! a missing download gives a clear message instead of a file-not-found error deep in the page
//! module. They are fetched (and their checksum checked) by `scripts/fetch-assets.sh`. Also
//! names the commit built, for `kiri_build_info`.

use std::path::Path;

/// The files `src/dashboard/page.rs` embeds from `assets/vendor/`.
const VENDORED: [&str; 3] = ["uPlot.iife.min.js", "uPlot.min.css", "LICENSE"];

fn main() {
    git_sha();
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new("assets");
    println!("cargo:rerun-if-changed=build.rs");
    // A directory is scanned as a whole: a file added to or changed in it reruns this check.
    println!("cargo:rerun-if-changed={}", dir.display());
    let missing: Vec<String> = VENDORED
        .iter()
        .map(|f| dir.join("vendor").join(f))
        .filter(|p| !p.is_file())
        .map(|p| Path::new(&root).join(p).display().to_string())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "error: the dashboard's vendored assets are missing: {}\n\
             run `make assets` (or scripts/fetch-assets.sh) from the repository root: it \
             downloads uPlot from the npm registry and checks its pinned sha512",
            missing.join(", ")
        );
        std::process::exit(1);
    }
}

/// `KIRI_GIT_SHA` for `kiri_build_info`: the commit built (12 hex digits, `-dirty` with
/// uncommitted changes), or `unknown` outside a git checkout.
fn git_sha() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let sha = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let sha = if dirty { format!("{sha}-dirty") } else { sha };
    println!("cargo:rustc-env=KIRI_GIT_SHA={sha}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = std::path::Path::new(&dir);
        println!("cargo:rerun-if-changed={}", dir.join("HEAD").display());
        println!("cargo:rerun-if-changed={}", dir.join("index").display());
    }
}
