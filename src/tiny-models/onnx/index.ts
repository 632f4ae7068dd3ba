export { ensureTinyDiffusionModel, tinyDiffusionFiles, type TinyDiffusionVariant } from './tiny-diffusion.ts';
export { bertOnnxFiles, ensureOnnxBert, onnxBertBuild, type OnnxBertKind } from './bert-onnx.ts';
