// GET /v1/models and /v1/models/{id}: the query the list takes and the model objects it answers with
// (OpenAI's model object, SiliconFlow's type / sub_type, and Infera's own `infera` metadata).
import { z } from 'zod';

export const MODEL_TYPES = ['text', 'image', 'audio', 'video'] as const;
export const MODEL_SUB_TYPES = [
  'chat',
  'embedding',
  'reranker',
  'text-to-image',
  'image-to-image',
  'speech-to-text',
  'text-to-speech',
  'text-to-video',
  'image-to-video',
] as const;

/** SiliconFlow's filters; an empty value means no filter (apps send `type=`). */
export const modelsQuerySchema = z.object({
  type: z.union([z.enum(MODEL_TYPES), z.literal('')], { error: `must be one of ${MODEL_TYPES.join(', ')}` }).optional(),
  sub_type: z.union([z.enum(MODEL_SUB_TYPES), z.literal('')], { error: `must be one of ${MODEL_SUB_TYPES.join(', ')}` }).optional(),
});

export const wireModelSchema = z.object({
  id: z.string(),
  object: z.literal('model'),
  created: z.number().int(),
  owned_by: z.string(),
  type: z.enum(MODEL_TYPES),
  sub_type: z.enum(MODEL_SUB_TYPES),
  infera: z
    .object({
      engine: z.string(),
      state: z.enum(['unloaded', 'loading', 'ready', 'failed']),
      aliases: z.array(z.string()).optional().describe('On the canonical id: the other ids that name this model.'),
      alias_of: z.string().optional().describe('On an alias: the canonical id of the model it names.'),
      description: z.string().optional(),
      capabilities: z.record(z.string(), z.boolean()).optional().describe('Image models: what they honour (negative_prompt, guidance_scale, image_to_image).'),
      error: z.string().optional().describe('Why the last load failed.'),
      retry_at: z.number().int().optional().describe('A failed model: when a request may try loading it again (Unix seconds), unless its file changes first.'),
    })
    .describe("Infera's own metadata: load state and operator notes."),
});
export type WireModel = z.infer<typeof wireModelSchema>;

export const modelListSchema = z.object({ object: z.literal('list'), data: z.array(wireModelSchema) });
export type WireModelList = z.infer<typeof modelListSchema>;
