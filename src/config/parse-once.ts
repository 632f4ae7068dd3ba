// zod's parse option for schemas parsed once or a few times per process: the config file, its
// defaults, the preset catalogue. zod 4 compiles an object schema's parser with `new Function` at its
// first parse (its "fast pass"), which costs more than it saves when no second parse follows:
// loadConfig's first call took 16.3 ms of CPU with them and 11.0 without (docs/BENCHMARKS.md,
// "Start-up: the cold first answer waits on the engine process", startup7).
// The option reaches nested schemas through the parse context; a `.default(() => x.parse({}))` is a
// parse of its own and needs it too. Request bodies (src/protocol) keep the compiled parsers: they are
// parsed on every request.
export const PARSE_ONCE = { jitless: true } as const;
