// zod's parse option for schemas parsed once or a few times per process: the config file, its
// defaults, the preset catalogue. zod 4 compiles an object schema's parser with `new Function` at its
// first parse (its "fast pass"), which costs more than it saves when no second parse follows: the
// config parse of `infera serve` (~60 object schemas) spent most of its CPU generating and compiling
// those parsers (docs/BENCHMARKS.md, "Start-up: the config parsed without zod's compiled parsers").
// The option reaches nested schemas through the parse context; a `.default(() => x.parse({}))` is a
// parse of its own and needs it too. Request bodies (src/protocol) keep the compiled parsers: they are
// parsed on every request.
export const PARSE_ONCE = { jitless: true } as const;
