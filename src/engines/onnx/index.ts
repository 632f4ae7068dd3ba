export { loadOnnxDiffusionModel, type OnnxDiffusionLoadOptions } from './diffusion-model.ts';
export { DiffusionPipeline, type PipelineRequest, type PipelineResult, type OutputFormat } from './diffusion-pipeline.ts';
