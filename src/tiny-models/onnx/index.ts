export { ensureTinyDiffusionModel, tinyDiffusionFiles, type TinyDiffusionVariant } from './tiny-diffusion.ts';
