// Noise schedulers for the denoising loop, configured from an export's scheduler/scheduler_config.json.
// The math follows diffusers' EulerDiscrete, EulerAncestralDiscrete, DDIM and LCM schedulers
// (deterministic, eta = 0 for DDIM, no "churn" for Euler), so a model behaves as it does under diffusers.
// All arithmetic is element-wise over the whole batch: every image in a batch is at the same timestep.

export interface SchedulerConfig {
  _class_name?: string;
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: 'linear' | 'scaled_linear' | 'squaredcos_cap_v2' | string;
  trained_betas?: number[] | null;
  prediction_type?: 'epsilon' | 'v_prediction' | 'sample' | string;
  timestep_spacing?: 'leading' | 'trailing' | 'linspace' | string;
  steps_offset?: number;
  set_alpha_to_one?: boolean;
  clip_sample?: boolean;
  clip_sample_range?: number;
  original_inference_steps?: number;
  timestep_scaling?: number;
  use_karras_sigmas?: boolean;
}

export type SchedulerKind = 'euler' | 'euler-ancestral' | 'ddim' | 'lcm';

/** One denoising run's schedule: built per request, holds no model state. */
export interface SchedulePlan {
  /** Timesteps handed to the UNet, in order (may be fractional for Euler's linspace spacing). */
  readonly timesteps: number[];
  /** Multiplier for the initial Gaussian noise (text-to-image). */
  readonly initNoiseSigma: number;
  /** Factor applied to the latents before the UNet call at step i (Euler's 1/sqrt(σ²+1), else 1). */
  inputScale(i: number): number;
  /** Advances `sample` in place from step i to i+1 given the (guided) model output. */
  step(i: number, modelOutput: Float32Array, sample: Float32Array, noise: () => Float32Array): void;
  /** img2img: noises clean latents to the level of the first timestep, in place. */
  addNoise(latents: Float32Array, noise: Float32Array): void;
}

export interface DiffusionScheduler {
  readonly kind: SchedulerKind;
  readonly warnings: string[];
  /** `strength` < 1 (img2img) skips the noisiest part of the schedule, like diffusers' get_timesteps. */
  plan(steps: number, strength?: number): SchedulePlan;
}

function betas(config: SchedulerConfig, count: number): number[] {
  if (config.trained_betas?.length) return config.trained_betas;
  const start = config.beta_start ?? 0.0001;
  const end = config.beta_end ?? 0.02;
  const linspace = (a: number, b: number) => Array.from({ length: count }, (_, i) => a + ((b - a) * i) / (count - 1));
  switch (config.beta_schedule ?? 'linear') {
    case 'linear':
      return linspace(start, end);
    case 'scaled_linear':
      return linspace(Math.sqrt(start), Math.sqrt(end)).map((b) => b * b);
    case 'squaredcos_cap_v2': {
      const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
      return Array.from({ length: count }, (_, i) => Math.min(1 - alphaBar((i + 1) / count) / alphaBar(i / count), 0.999));
    }
    default:
      throw new Error(`scheduler: beta_schedule "${config.beta_schedule}" is not supported`);
  }
}

export function alphasCumprod(config: SchedulerConfig): Float64Array {
  const count = config.num_train_timesteps ?? 1000;
  const out = new Float64Array(count);
  let product = 1;
  for (const [i, beta] of betas(config, count).entries()) {
    product *= 1 - beta;
    out[i] = product;
  }
  return out;
}

/** Euler's noise levels σ(t) = sqrt((1 − ᾱ_t) / ᾱ_t), linearly interpolated between integer timesteps. */
export function sigmaAt(cumprod: Float64Array, t: number): number {
  const sigma = (i: number) => Math.sqrt((1 - cumprod[i]!) / cumprod[i]!);
  const low = Math.max(0, Math.min(cumprod.length - 1, Math.floor(t)));
  const high = Math.min(cumprod.length - 1, low + 1);
  const frac = t - low;
  return sigma(low) * (1 - frac) + sigma(high) * frac;
}

/** Timesteps for `steps` inference steps under diffusers' three spacing rules (descending). */
export function spacedTimesteps(config: SchedulerConfig, steps: number, rounded: boolean): number[] {
  const train = config.num_train_timesteps ?? 1000;
  const offset = config.steps_offset ?? 0;
  const spacing = config.timestep_spacing ?? 'leading';
  if (spacing === 'linspace') {
    const values = Array.from({ length: steps }, (_, i) => (steps === 1 ? 0 : ((train - 1) * i) / (steps - 1)));
    return values.reverse().map((v) => (rounded ? Math.round(v) : v));
  }
  if (spacing === 'trailing') {
    const ratio = train / steps;
    return Array.from({ length: steps }, (_, i) => Math.round(train - i * ratio) - 1);
  }
  if (spacing !== 'leading') throw new Error(`scheduler: timestep_spacing "${spacing}" is not supported`);
  const ratio = Math.floor(train / steps);
  return Array.from({ length: steps }, (_, i) => Math.round(i * ratio) + offset).reverse();
}

/** Steps kept for img2img, like diffusers' get_timesteps: int(steps × strength), at least one. */
function keptSteps(steps: number, strength: number): number {
  return Math.max(1, Math.min(steps, Math.floor(steps * strength)));
}

/**
 * x̂₀ and ε̂ as linear functions of (sample x, model output m) under the configured prediction type
 * (DDPM parameterisation): x̂₀ = x0x·x + x0m·m, ε̂ = ex·x + em·m. Coefficients per step keep the
 * per-element loops branch-free, which matters at 128×128 latents × 4 channels × batch.
 */
function ddpmCoefficients(type: string, alpha: number): { x0x: number; x0m: number; ex: number; em: number } {
  const a = Math.sqrt(alpha);
  const b = Math.sqrt(1 - alpha);
  if (type === 'epsilon') return { x0x: 1 / a, x0m: -b / a, ex: 0, em: 1 };
  if (type === 'v_prediction') return { x0x: a, x0m: -b, ex: b, em: a };
  return { x0x: 0, x0m: 1, ex: 1 / b, em: -a / b };
}

class EulerScheduler implements DiffusionScheduler {
  readonly warnings: string[] = [];
  private readonly cumprod: Float64Array;
  constructor(
    private readonly config: SchedulerConfig,
    readonly kind: 'euler' | 'euler-ancestral',
  ) {
    this.cumprod = alphasCumprod(config);
    if (config.use_karras_sigmas) this.warnings.push('use_karras_sigmas is not implemented; using the default sigmas');
  }

  plan(steps: number, strength = 1): SchedulePlan {
    const config = this.config;
    const spacing = config.timestep_spacing ?? 'linspace';
    const all = spacedTimesteps({ ...config, timestep_spacing: spacing }, steps, false);
    const start = strength < 1 ? steps - keptSteps(steps, strength) : 0;
    const timesteps = all.slice(start);
    const sigmas = [...timesteps.map((t) => sigmaAt(this.cumprod, t)), 0];
    const maxSigma = Math.max(...all.map((t) => sigmaAt(this.cumprod, t)));
    const prediction = config.prediction_type ?? 'epsilon';
    const ancestral = this.kind === 'euler-ancestral';
    return {
      timesteps,
      initNoiseSigma: spacing === 'linspace' || spacing === 'trailing' ? maxSigma : Math.sqrt(maxSigma ** 2 + 1),
      inputScale: (i) => 1 / Math.sqrt(sigmas[i]! ** 2 + 1),
      step: (i, output, sample, noise) => {
        const sigma = sigmas[i]!;
        const next = sigmas[i + 1]!;
        let dt = next - sigma;
        let up = 0;
        if (ancestral) {
          up = Math.sqrt((next ** 2 * (sigma ** 2 - next ** 2)) / sigma ** 2);
          dt = Math.sqrt(next ** 2 - up ** 2) - sigma;
        }
        // x̂₀ = cx·x + cm·m, so x + (x − x̂₀)/σ·dt is linear in (x, m) too.
        let cx = 1;
        let cm = -sigma;
        if (prediction === 'v_prediction') [cx, cm] = [1 / (sigma ** 2 + 1), -sigma / Math.sqrt(sigma ** 2 + 1)];
        else if (prediction !== 'epsilon') [cx, cm] = [0, 1];
        const ax = 1 + (dt / sigma) * (1 - cx);
        const am = -(dt / sigma) * cm;
        const extra = up > 0 ? noise() : undefined;
        if (extra) for (let k = 0; k < sample.length; k++) sample[k] = ax * sample[k]! + am * output[k]! + up * extra[k]!;
        else for (let k = 0; k < sample.length; k++) sample[k] = ax * sample[k]! + am * output[k]!;
      },
      addNoise: (latents, noise) => {
        const sigma = sigmas[0]!;
        for (let k = 0; k < latents.length; k++) latents[k] = latents[k]! + noise[k]! * sigma;
      },
    };
  }
}

class DdimScheduler implements DiffusionScheduler {
  readonly kind = 'ddim' as const;
  readonly warnings: string[] = [];
  private readonly cumprod: Float64Array;
  constructor(private readonly config: SchedulerConfig) {
    this.cumprod = alphasCumprod(config);
  }

  plan(steps: number, strength = 1): SchedulePlan {
    const config = this.config;
    const train = config.num_train_timesteps ?? 1000;
    const all = spacedTimesteps(config, steps, true);
    const timesteps = all.slice(strength < 1 ? steps - keptSteps(steps, strength) : 0);
    const final = (config.set_alpha_to_one ?? true) ? 1 : this.cumprod[0]!;
    const ratio = Math.floor(train / steps);
    const alphaAt = (t: number) => (t >= 0 ? this.cumprod[Math.min(t, train - 1)]! : final);
    const prediction = config.prediction_type ?? 'epsilon';
    const clip = config.clip_sample ?? true ? (config.clip_sample_range ?? 1) : Infinity;
    return {
      timesteps,
      initNoiseSigma: 1,
      inputScale: () => 1,
      step: (i, output, sample) => {
        const t = timesteps[i]!;
        const alpha = alphaAt(t);
        const alphaPrev = alphaAt(t - ratio);
        const { x0x, x0m, ex, em } = ddpmCoefficients(prediction, alpha);
        const keep = Math.sqrt(alphaPrev);
        const renoise = Math.sqrt(1 - alphaPrev);
        for (let k = 0; k < sample.length; k++) {
          const x = sample[k]!;
          const m = output[k]!;
          // Like diffusers, clipping changes x̂₀ only; ε̂ stays as predicted.
          const x0 = Math.max(-clip, Math.min(clip, x0x * x + x0m * m));
          sample[k] = keep * x0 + renoise * (ex * x + em * m);
        }
      },
      addNoise: (latents, noise) => {
        const alpha = alphaAt(timesteps[0]!);
        for (let k = 0; k < latents.length; k++) latents[k] = Math.sqrt(alpha) * latents[k]! + Math.sqrt(1 - alpha) * noise[k]!;
      },
    };
  }
}

/** LCM's timesteps: `steps` evenly spaced picks from the distillation's original skipping schedule. */
export function lcmTimesteps(config: SchedulerConfig, steps: number, strength = 1): number[] {
  const train = config.num_train_timesteps ?? 1000;
  const original = config.original_inference_steps ?? 50;
  const k = Math.floor(train / original);
  const count = Math.max(1, Math.floor(original * strength));
  const origin = Array.from({ length: count }, (_, i) => (i + 1) * k - 1).reverse();
  const n = Math.min(steps, origin.length);
  return Array.from({ length: n }, (_, i) => origin[Math.floor((i * origin.length) / n)]!);
}

class LcmScheduler implements DiffusionScheduler {
  readonly kind = 'lcm' as const;
  readonly warnings: string[] = [];
  private readonly cumprod: Float64Array;
  constructor(private readonly config: SchedulerConfig) {
    this.cumprod = alphasCumprod(config);
  }

  plan(steps: number, strength = 1): SchedulePlan {
    const config = this.config;
    const timesteps = lcmTimesteps(config, steps, strength);
    const final = (config.set_alpha_to_one ?? true) ? 1 : this.cumprod[0]!;
    const alphaAt = (t: number) => (t >= 0 ? this.cumprod[t]! : final);
    const prediction = config.prediction_type ?? 'epsilon';
    const scaling = config.timestep_scaling ?? 10;
    const clip = config.clip_sample ? (config.clip_sample_range ?? 1) : Infinity;
    return {
      timesteps,
      initNoiseSigma: 1,
      inputScale: () => 1,
      step: (i, output, sample, noise) => {
        const t = timesteps[i]!;
        const last = i === timesteps.length - 1;
        const prevT = last ? t : timesteps[i + 1]!;
        const alpha = alphaAt(t);
        const alphaPrev = alphaAt(prevT);
        // Consistency-model boundary condition (σ_data = 0.5), as in the LCM paper.
        const scaled = t * scaling;
        const cSkip = 0.25 / (scaled ** 2 + 0.25);
        const cOut = scaled / Math.sqrt(scaled ** 2 + 0.25);
        const extra = last ? undefined : noise();
        const { x0x, x0m } = ddpmCoefficients(prediction, alpha);
        const keep = extra ? Math.sqrt(alphaPrev) : 1;
        const renoise = extra ? Math.sqrt(1 - alphaPrev) : 0;
        for (let k = 0; k < sample.length; k++) {
          const x = sample[k]!;
          const x0 = Math.max(-clip, Math.min(clip, x0x * x + x0m * output[k]!));
          sample[k] = keep * (cOut * x0 + cSkip * x) + (extra ? renoise * extra[k]! : 0);
        }
      },
      addNoise: (latents, noise) => {
        const alpha = alphaAt(timesteps[0]!);
        for (let k = 0; k < latents.length; k++) latents[k] = Math.sqrt(alpha) * latents[k]! + Math.sqrt(1 - alpha) * noise[k]!;
      },
    };
  }
}

/** Picks the scheduler named by `_class_name`; unknown ones (PNDM, DPM-Solver…) fall back to Euler with a warning. */
export function createScheduler(config: SchedulerConfig): DiffusionScheduler {
  const name = config._class_name ?? 'EulerDiscreteScheduler';
  switch (name) {
    case 'EulerDiscreteScheduler':
      return new EulerScheduler(config, 'euler');
    case 'EulerAncestralDiscreteScheduler':
      return new EulerScheduler(config, 'euler-ancestral');
    case 'DDIMScheduler':
      return new DdimScheduler(config);
    case 'LCMScheduler':
      return new LcmScheduler(config);
    default: {
      // Euler works for any ε/v-prediction model trained on the same β schedule; PNDM's "leading"
      // spacing carries over since its config rarely names one.
      const scheduler = new EulerScheduler({ timestep_spacing: 'leading', ...config }, 'euler');
      scheduler.warnings.push(`scheduler ${name} is not implemented; using EulerDiscreteScheduler with the same betas`);
      return scheduler;
    }
  }
}

/** LCM's guidance-scale embedding (w − 1 → sinusoidal features) fed to the UNet's `timestep_cond`. */
export function guidanceScaleEmbedding(guidanceScale: number, dim: number): Float32Array {
  const w = (guidanceScale - 1) * 1000;
  const half = Math.floor(dim / 2);
  const out = new Float32Array(dim);
  const base = Math.log(10000) / (half - 1);
  for (let i = 0; i < half; i++) {
    const angle = w * Math.exp(-base * i);
    out[i] = Math.sin(angle);
    out[half + i] = Math.cos(angle);
  }
  return out;
}
