//! Where a trap happened. wasmi reports why a guest trapped but not where, so a module is
//! instrumented when it loads: a mutable global, exported as [`CURRENT`], holds the index of
//! the wasm function running, set at each function's entry and again after each call returns
//! to it. After a trap it names the innermost function, by its name from the module's name
//! section when there is one. The instruction's offset stays out of reach. The cost: two
//! instructions per function entry and per call (fuel included).
//!
//! A module that cannot be instrumented (no export section, say) runs as it is, without
//! locations.

use std::collections::HashMap;
use std::sync::Arc;

use wasm_encoder::reencode::{utils, Error, Reencode};
use wasm_encoder::{
    CodeSection, ConstExpr, ExportKind, ExportSection, GlobalSection, GlobalType, Instruction,
    Module, SectionId, ValType,
};
use wasmparser::{FunctionBody, Operator, Parser, Payload};

/// The export that holds the running function's index.
pub const CURRENT: &str = "__kiri_current_function";

/// A module's function names, by index (from its name section; none without one).
#[derive(Debug, Default)]
pub struct Names(HashMap<u32, String>);

impl Names {
    /// How a person reads function `index`: `wasm function 12 (my_crate::on_event)`.
    pub fn describe(&self, index: u32) -> String {
        match self.0.get(&index) {
            Some(name) => format!("wasm function {index} ({name})"),
            None => format!("wasm function {index}"),
        }
    }
}

/// `wasm` with the location global added, and its function names; `None` when it cannot be
/// instrumented (it then runs as it is).
pub fn instrument(wasm: &[u8]) -> Option<(Vec<u8>, Arc<Names>)> {
    let scan = scan(wasm).ok()?;
    if !scan.has_exports {
        return None;
    }
    let mut r = Instrument {
        next_function: scan.imported_functions,
        global: scan.imported_globals + scan.defined_globals,
        has_globals: scan.has_globals,
        added_globals: false,
    };
    let mut module = Module::new();
    r.parse_core_module(&mut module, Parser::new(0), wasm)
        .ok()?;
    let out = module.finish();
    // What comes out must be as valid as what went in.
    wasmparser::Validator::new_with_features(wasmparser::WasmFeatures::all())
        .validate_all(&out)
        .ok()?;
    Some((out, Arc::new(scan.names)))
}

/// What instrumenting needs to know first.
#[derive(Default)]
struct Scan {
    imported_functions: u32,
    imported_globals: u32,
    defined_globals: u32,
    has_globals: bool,
    has_exports: bool,
    names: Names,
}

fn scan(wasm: &[u8]) -> wasmparser::Result<Scan> {
    let mut s = Scan::default();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports {
                    match import?.ty {
                        wasmparser::TypeRef::Func(_) => s.imported_functions += 1,
                        wasmparser::TypeRef::Global(_) => s.imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::GlobalSection(globals) => {
                s.has_globals = true;
                s.defined_globals = globals.count();
            }
            Payload::ExportSection(exports) => {
                s.has_exports = true;
                for e in exports {
                    if e?.name == CURRENT {
                        // Ours already: a module must not bring its own.
                        s.has_exports = false;
                    }
                }
            }
            Payload::CustomSection(c) => {
                if let wasmparser::KnownCustom::Name(names) = c.as_known() {
                    for name in names.flatten() {
                        if let wasmparser::Name::Function(map) = name {
                            for naming in map.into_iter().flatten() {
                                s.names.0.insert(naming.index, naming.name.to_string());
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    Ok(s)
}

struct Instrument {
    /// The index of the next function body (imported functions come first).
    next_function: u32,
    /// The index of the global it adds.
    global: u32,
    has_globals: bool,
    added_globals: bool,
}

impl Instrument {
    fn ours() -> (GlobalType, ConstExpr) {
        let ty = GlobalType {
            val_type: ValType::I32,
            mutable: true,
            shared: false,
        };
        (ty, ConstExpr::i32_const(-1))
    }
}

impl Reencode for Instrument {
    type Error = std::convert::Infallible;

    fn parse_function_body(
        &mut self,
        code: &mut CodeSection,
        func: FunctionBody<'_>,
    ) -> Result<(), Error<Self::Error>> {
        let me = self.next_function as i32;
        self.next_function += 1;
        let mut f = self.new_function_with_parsed_locals(&func)?;
        let mark = |f: &mut wasm_encoder::Function, global: u32| {
            f.instruction(&Instruction::I32Const(me));
            f.instruction(&Instruction::GlobalSet(global));
        };
        mark(&mut f, self.global);
        let mut reader = func.get_operators_reader()?;
        while !reader.eof() {
            let op = reader.read()?;
            let returns_here = matches!(
                op,
                Operator::Call { .. } | Operator::CallIndirect { .. } | Operator::CallRef { .. }
            );
            f.instruction(&self.instruction(op)?);
            if returns_here {
                mark(&mut f, self.global);
            }
        }
        code.function(&f);
        Ok(())
    }

    fn parse_global_section(
        &mut self,
        globals: &mut GlobalSection,
        section: wasmparser::GlobalSectionReader<'_>,
    ) -> Result<(), Error<Self::Error>> {
        utils::parse_global_section(self, globals, section)?;
        let (ty, init) = Instrument::ours();
        globals.global(ty, &init);
        self.added_globals = true;
        Ok(())
    }

    fn parse_export_section(
        &mut self,
        exports: &mut ExportSection,
        section: wasmparser::ExportSectionReader<'_>,
    ) -> Result<(), Error<Self::Error>> {
        utils::parse_export_section(self, exports, section)?;
        exports.export(CURRENT, ExportKind::Global, self.global);
        Ok(())
    }

    fn intersperse_section_hook(
        &mut self,
        module: &mut Module,
        _after: Option<SectionId>,
        before: Option<SectionId>,
    ) -> Result<(), Error<Self::Error>> {
        // A module without globals gets a global section of ours, just before its exports.
        if !self.has_globals && !self.added_globals && before == Some(SectionId::Export) {
            let mut globals = GlobalSection::new();
            let (ty, init) = Instrument::ours();
            globals.global(ty, &init);
            module.section(&globals);
            self.added_globals = true;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_module_gets_the_global_and_keeps_its_names() {
        let wat = r#"(module
          (import "kiri" "emit" (func (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func $inner (export "inner") unreachable)
          (func $outer (export "outer") call $inner))"#;
        let (out, names) = instrument(&wat::parse_str(wat).unwrap()).unwrap();
        assert_eq!(names.describe(1), "wasm function 1 (inner)");
        assert_eq!(names.describe(7), "wasm function 7");
        let exports: Vec<String> = Parser::new(0)
            .parse_all(&out)
            .filter_map(|p| match p.unwrap() {
                Payload::ExportSection(e) => Some(
                    e.into_iter()
                        .map(|e| e.unwrap().name.to_string())
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert!(exports.contains(&CURRENT.to_string()), "{exports:?}");
    }
}
