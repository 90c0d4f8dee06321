//! A WebAssembly component of another world (a plain `wasi:cli` command): the
//! host must refuse to load it as a plugin, with a message saying why.

fn main() {
    println!("I am a command, not an assay plugin");
}
