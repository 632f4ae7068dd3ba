// autocannon ships no types and @types/autocannon is not a dependency: treat it as untyped in benches.
declare module 'autocannon';
