// `keep_alive`: Infera's own request field (Ollama's name and values), on every model route. It sets how
// long the model stays loaded after this request: "5m", "30s", seconds as a number, 0 (unload right
// after), -1 (never). Parsed to milliseconds (Infinity: never); the registry applies it on release.
import { keepAliveSchema } from '../../config/lifecycle.ts';

export const keepAliveField = keepAliveSchema
  .nullish()
  .describe(
    'Infera extension: how long the model stays loaded after this request ("5m", "30s", "1h", seconds as a number; 0 = unload right after, -1 = never). Default: the model\'s keepAlive.',
  );

