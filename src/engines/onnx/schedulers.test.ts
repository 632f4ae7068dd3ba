import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  alphasCumprod,
  createScheduler,
  guidanceScaleEmbedding,
  lcmTimesteps,
  sigmaAt,
  spacedTimesteps,
  type SchedulerConfig,
} from './schedulers.ts';
import { GaussianRandom } from './random.ts';

const sd: SchedulerConfig = {
  num_train_timesteps: 1000,
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  prediction_type: 'epsilon',
  steps_offset: 1,
};

const close = (actual: number, expected: number, tolerance: number, what = '') =>
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what} ${actual} is not within ${tolerance} of ${expected}`);

test('Euler sigma at t=999 for scaled_linear 0.00085–0.012 is 14.6146', () => {
  close(sigmaAt(alphasCumprod(sd), 999), 14.6146, 5e-4);
  // σ at t=0 is tiny: sqrt(β₀ / (1 − β₀)).
  close(sigmaAt(alphasCumprod(sd), 0), Math.sqrt(0.00085 / (1 - 0.00085)), 1e-9);
});

test('LCM 4-step timesteps are 999, 759, 499, 259 and strength shortens the origin schedule', () => {
  assert.deepEqual(lcmTimesteps({ ...sd, original_inference_steps: 50 }, 4), [999, 759, 499, 259]);
  assert.deepEqual(lcmTimesteps({ ...sd, original_inference_steps: 50 }, 1), [999]);
  assert.deepEqual(lcmTimesteps({ ...sd, original_inference_steps: 50 }, 2, 0.5), [499, 259]);
  const scheduler = createScheduler({ ...sd, _class_name: 'LCMScheduler', original_inference_steps: 50 });
  assert.deepEqual(scheduler.plan(4).timesteps, [999, 759, 499, 259]);
});

test('timestep spacing follows diffusers: leading, trailing, linspace', () => {
  assert.deepEqual(spacedTimesteps({ ...sd, timestep_spacing: 'leading' }, 4, true), [751, 501, 251, 1]);
  assert.deepEqual(spacedTimesteps({ ...sd, timestep_spacing: 'trailing' }, 1, true), [999]);
  assert.deepEqual(spacedTimesteps({ ...sd, timestep_spacing: 'trailing' }, 4, true), [999, 749, 499, 249]);
  assert.deepEqual(spacedTimesteps({ ...sd, timestep_spacing: 'linspace' }, 4, false), [999, 666, 333, 0]);
  const ddim = createScheduler({ ...sd, _class_name: 'DDIMScheduler', timestep_spacing: 'leading' }).plan(50).timesteps;
  assert.equal(ddim.length, 50);
  assert.equal(ddim[0], 981);
  assert.equal(ddim.at(-1), 1);
});

test('Euler init noise sigma and input scaling', () => {
  const trailing = createScheduler({ ...sd, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'trailing' }).plan(1);
  assert.deepEqual(trailing.timesteps, [999]);
  close(trailing.initNoiseSigma, 14.6146, 5e-4);
  close(trailing.inputScale(0), 1 / Math.sqrt(14.6146 ** 2 + 1), 1e-5);
  const leading = createScheduler({ ...sd, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'leading' }).plan(4);
  const maxSigma = sigmaAt(alphasCumprod(sd), 751);
  close(leading.initNoiseSigma, Math.sqrt(maxSigma ** 2 + 1), 1e-9);
});

/** Runs a plan with a perfect ε-predictor for a known x₀: every scheduler must land on x₀. */
function denoisePerfectly(className: string, steps: number, extra: SchedulerConfig = {}) {
  const scheduler = createScheduler({ ...sd, _class_name: className, timestep_spacing: 'trailing', ...extra });
  const plan = scheduler.plan(steps);
  const cumprod = alphasCumprod(sd);
  const x0 = Float32Array.from([0.5, -0.25, 1.0, 0]);
  const random = new GaussianRandom(7);
  const sample = random.fill(new Float32Array(4)).map((v) => v * plan.initNoiseSigma);
  const euler = scheduler.kind.startsWith('euler');
  let noiseCalls = 0;
  for (let i = 0; i < plan.timesteps.length; i++) {
    const t = plan.timesteps[i]!;
    const output = new Float32Array(4);
    if (euler) {
      const sigma = sigmaAt(cumprod, t);
      for (let k = 0; k < 4; k++) output[k] = (sample[k]! - x0[k]!) / sigma;
    } else {
      const alpha = cumprod[t]!;
      for (let k = 0; k < 4; k++) output[k] = (sample[k]! - Math.sqrt(alpha) * x0[k]!) / Math.sqrt(1 - alpha);
    }
    plan.step(i, output, sample, () => {
      noiseCalls++;
      return random.fill(new Float32Array(4));
    });
  }
  return { sample, x0, noiseCalls, plan };
}

test('Euler with a perfect denoiser lands on x0', () => {
  const { sample, x0, noiseCalls } = denoisePerfectly('EulerDiscreteScheduler', 4);
  for (let k = 0; k < 4; k++) close(sample[k]!, x0[k]!, 1e-4, `euler[${k}]`);
  assert.equal(noiseCalls, 0);
});

test('Euler ancestral injects noise on every step but the last and still lands on x0', () => {
  const { sample, x0, noiseCalls } = denoisePerfectly('EulerAncestralDiscreteScheduler', 4);
  for (let k = 0; k < 4; k++) close(sample[k]!, x0[k]!, 1e-4, `euler-a[${k}]`);
  assert.equal(noiseCalls, 3);
});

test('DDIM (eta 0) with a perfect denoiser lands on x0 (set_alpha_to_one)', () => {
  const { sample, x0 } = denoisePerfectly('DDIMScheduler', 5, { set_alpha_to_one: true, clip_sample: false });
  for (let k = 0; k < 4; k++) close(sample[k]!, x0[k]!, 1e-4, `ddim[${k}]`);
});

test('LCM with a perfect denoiser lands on x0 and re-noises between steps', () => {
  const { sample, x0, noiseCalls } = denoisePerfectly('LCMScheduler', 4, { original_inference_steps: 50, timestep_scaling: 10 });
  for (let k = 0; k < 4; k++) close(sample[k]!, x0[k]!, 1e-4, `lcm[${k}]`);
  assert.equal(noiseCalls, 3);
});

test('img2img strength keeps the tail of the schedule', () => {
  const euler = createScheduler({ ...sd, _class_name: 'EulerDiscreteScheduler', timestep_spacing: 'leading' });
  const full = euler.plan(10).timesteps;
  assert.deepEqual(euler.plan(10, 0.5).timesteps, full.slice(5));
  assert.deepEqual(euler.plan(10, 0.01).timesteps, full.slice(9), 'at least one step runs');
  const ddim = createScheduler({ ...sd, _class_name: 'DDIMScheduler' });
  assert.deepEqual(ddim.plan(4, 0.75).timesteps, ddim.plan(4).timesteps.slice(1));
});

test('unknown schedulers fall back to Euler with a warning', () => {
  const scheduler = createScheduler({ ...sd, _class_name: 'PNDMScheduler' });
  assert.equal(scheduler.kind, 'euler');
  assert.match(scheduler.warnings[0]!, /PNDMScheduler/);
  assert.throws(() => createScheduler({ ...sd, beta_schedule: 'nonsense' }), /beta_schedule/);
});

test('LCM guidance embedding: sin/cos halves of (w - 1) * 1000', () => {
  const one = guidanceScaleEmbedding(1, 256);
  assert.equal(one.length, 256);
  assert.equal(one[0], 0);
  assert.equal(one[128], 1);
  const e = guidanceScaleEmbedding(8.5, 256);
  close(e[0]!, Math.sin(7500), 1e-6);
  close(e[128 + 1]!, Math.cos(7500 * Math.exp(-Math.log(10000) / 127)), 1e-6);
});

test('seeded noise is reproducible, per-stream distinct, and standard normal', () => {
  const a = new GaussianRandom(9999999999).fill(new Float32Array(4096));
  const b = new GaussianRandom(9999999999).fill(new Float32Array(4096));
  const other = new GaussianRandom(9999999999, 1).fill(new Float32Array(4096));
  const low = new GaussianRandom(9999999999 % 2 ** 32).fill(new Float32Array(8));
  assert.deepEqual(a, b);
  assert.notDeepEqual(a.slice(0, 8), other.slice(0, 8));
  assert.notDeepEqual(a.slice(0, 8), low, 'the high bits of a large seed matter');
  const mean = a.reduce((s, v) => s + v, 0) / a.length;
  const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / a.length;
  close(mean, 0, 0.06, 'mean');
  close(variance, 1, 0.08, 'variance');
});
