// Test helper run in a child process: generates one image on a tiny pipeline folder and prints the
// PNG's sha256, so tests can check that a seed reproduces byte-identical files across processes.
// Usage: node --import tsx generate-hash.ts <pipeline folder> <seed> <threads>
import { createHash } from 'node:crypto';
import { DiffusionPipeline } from '../diffusion-pipeline.ts';

const [folder, seed, threads] = process.argv.slice(2);
const pipeline = await DiffusionPipeline.load(folder!, { threads: Number(threads ?? 2), executionProviders: ['cpu'] });
const result = await pipeline.generate({
  prompt: 'a photo of a cat',
  negativePrompt: 'blurry',
  width: 64,
  height: 64,
  batchSize: 1,
  steps: 3,
  guidanceScale: 7.5,
  seed: Number(seed),
});
process.stdout.write(createHash('sha256').update(result.images[0]!).digest('hex'));
await pipeline.dispose();
