// The model entries of the onnx (encoders) and onnx-diffusion engines: a `path` to an export folder and
// the `onnx` options block they share (docs/CONFIGURATION.md, "models[].onnx"). zod only: imported by
// the config loader, so it must not import onnxruntime-node.
import { z } from 'zod';
import { engineModelSchema } from '../../config/model.ts';
import { PARSE_ONCE } from '../../config/parse-once.ts';

const positiveInt = z.number().int().positive();

export const onnxOptionsSchema = z
  .object({
    /** Intra-op threads. Pinned: more than 2 threads changes float rounding and breaks seed determinism. */
    threads: positiveInt.default(2),
    executionProviders: z.array(z.enum(['cpu', 'cuda'])).default(['cpu']),
    /** One generation at a time per model unless raised. */
    concurrency: positiveInt.default(1),
    minSize: positiveInt.default(64),
    maxSize: positiveInt.default(2048),
    /** Pixel budget of one image; the default covers every size SiliconFlow lists (largest: 1328x1328). */
    maxPixels: positiveInt.default(1328 * 1328),
    defaultSize: z.string().regex(/^\d+x\d+$/).default('512x512'),
    /** Use a tiny VAE (TAESD) folder for decoding when set. */
    tinyVaePath: z.string().optional(),
    /** img2img strength when the request gives none. */
    defaultStrength: z.number().min(0).max(1).default(0.6),
    /** Encoders (engine onnx): model file inside the folder when it is not model.onnx or onnx/model.onnx. */
    file: z.string().min(1).optional(),
    /**
     * Embedding models (engine onnx): how token states become one vector. Default: what the export's
     * 1_Pooling/config.json says; required when the folder has none and no `sentence_embedding` output.
     */
    pooling: z.enum(['cls', 'mean', 'last']).optional(),
    /** Encoders (engine onnx): rows per forward pass. */
    maxBatchSize: positiveInt.default(32),
    /** Encoders (engine onnx): padded tokens (rows × longest row) per forward pass, bounding its memory. */
    maxBatchTokens: positiveInt.default(16384),
    /** Encoders (engine onnx): intra-op threads spin during a forward pass and sleep between passes. */
    spin: z.boolean().default(false),
  })
  .strict();

const onnxShape = {
  /** An optimum / sentence-transformers export folder. */
  path: z.string().min(1),
  onnx: onnxOptionsSchema.default(() => onnxOptionsSchema.parse({}, PARSE_ONCE)),
};

export const onnxModelSchema = engineModelSchema('onnx', onnxShape);
export const onnxDiffusionModelSchema = engineModelSchema('onnx-diffusion', onnxShape);

export type OnnxOptions = z.infer<typeof onnxOptionsSchema>;
/** An entry of either ONNX engine (the encoder and diffusion code read only the shared keys). */
export type OnnxModelConfig = z.output<typeof onnxModelSchema> | z.output<typeof onnxDiffusionModelSchema>;

/** `onnx.tinyVaePath` is relative to the config file, like `path`. */
export function resolveOnnxPaths(config: OnnxModelConfig, absolute: (path: string) => string): void {
  if (config.onnx.tinyVaePath) config.onnx.tinyVaePath = absolute(config.onnx.tinyVaePath);
}
