// deploy/: the compose file, the Kubernetes manifests and the gateway config they share parse, and agree
// with each other and with the server (no cluster or Docker here: this is what can be checked offline).
// The gateway config loads through the real loader with the environment compose and the Secret give it;
// the probes hit /health and /ready on the port the config listens on; shutdown grace covers the drain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { loadConfig } from '../src/config/load.ts';

const deploy = join(dirname(fileURLToPath(import.meta.url)), '..', 'deploy');
const k8s = join(deploy, 'k8s');

// biome-ignore lint/suspicious/noExplicitAny: manifests are walked as the untyped YAML they are.
type Doc = any;

function documents(path: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(path, 'utf8'));
  const list = Array.isArray(docs) ? docs : [docs];
  for (const doc of list) {
    assert.deepEqual(doc.errors.map(String), [], `${path}: YAML errors`);
    assert.deepEqual(doc.warnings.map(String), [], `${path}: YAML warnings`);
  }
  return list.map((doc) => doc.toJS()).filter((value) => value !== null);
}

/** The host an upstream model entry points at. */
const upstreamHost = (model: object) => new URL((model as { upstream: { baseUrl: string } }).upstream.baseUrl).hostname;

const gatewayEnv = {
  INFERA_CONFIG: join(deploy, 'infera.yaml'),
  INFERA_DATABASE_URL: 'postgres://infera:secret@postgres:5432/infera',
  INFERA_REDIS_URL: 'redis://redis:6379',
};

test('every YAML file under deploy/ parses without errors or warnings', () => {
  const files = [
    ...readdirSync(deploy).filter((name) => name.endsWith('.yaml')).map((name) => join(deploy, name)),
    ...readdirSync(k8s).filter((name) => name.endsWith('.yaml')).map((name) => join(k8s, name)),
  ];
  assert.ok(files.length >= 10, files.join(', '));
  for (const file of files) assert.ok(documents(file).length > 0, `${file} is empty`);
});

test('the gateway config loads through the real loader, on Postgres + Redis, with upstream models only', () => {
  const { config } = loadConfig({}, gatewayEnv, deploy);
  assert.equal(config.storage.databaseUrl, gatewayEnv.INFERA_DATABASE_URL);
  assert.equal(config.storage.redisUrl, gatewayEnv.INFERA_REDIS_URL);
  assert.equal(config.server.host, '0.0.0.0');
  assert.ok(config.models.length >= 3);
  for (const model of config.models) assert.equal(model.engine, 'openai-compatible', model.id);
});

test('compose: gateways on Postgres + Redis with a /ready health check, a grace period above the drain, nginx in front', () => {
  const [compose] = documents(join(deploy, 'compose.yaml'));
  const { config } = loadConfig({}, gatewayEnv, deploy);
  const gateway = compose.services.infera;
  const env = gateway.environment as Record<string, string>;
  assert.equal(env.INFERA_CONFIG, '/etc/infera/infera.yaml');
  assert.ok(gateway.volumes.includes('./infera.yaml:/etc/infera/infera.yaml:ro'));
  assert.match(env.INFERA_DATABASE_URL!, /^postgres:\/\/.*@postgres:5432\//);
  assert.match(env.INFERA_REDIS_URL!, /^redis:\/\/redis:6379/);
  assert.ok(gateway.deploy.replicas >= 2);
  assert.match(gateway.healthcheck.test.join(' '), new RegExp(`127\\.0\\.0\\.1:${config.server.port}/ready`));
  assert.ok(Number.parseInt(gateway.stop_grace_period, 10) > config.server.drainTimeoutSeconds);
  for (const dependency of ['postgres', 'redis']) assert.equal(gateway.depends_on[dependency].condition, 'service_healthy');
  assert.equal(compose.services.lb.depends_on.infera.condition, 'service_healthy');
  assert.ok(existsSync(join(deploy, gateway.build.dockerfile.replace(/^deploy\//, ''))));
  const nginx = readFileSync(join(deploy, 'nginx.conf'), 'utf8');
  assert.match(nginx, new RegExp(`server infera:${config.server.port}`));
  // SSE through the balancer: unbuffered, and no proxy timeout shorter than a long generation.
  assert.match(nginx, /proxy_buffering off;/);
  // Every host a model points at is a service of the compose file.
  for (const model of config.models) {
    const host = upstreamHost(model);
    assert.ok(compose.services[host], `${model.id}: upstream host ${host} is not a compose service`);
  }
});

test('kubernetes: the kustomization lists existing files; the Deployment probes /health and /ready and drains before it is killed', () => {
  const [kustomization] = documents(join(deploy, 'kustomization.yaml'));
  for (const resource of kustomization.resources) assert.ok(existsSync(join(deploy, resource)), resource);
  for (const generator of kustomization.configMapGenerator)
    for (const file of generator.files) assert.ok(existsSync(join(deploy, file.split('=').at(-1))), file);
  const manifests = (kustomization.resources as string[]).flatMap((resource) => documents(join(deploy, resource)));
  for (const manifest of manifests) assert.ok(manifest.apiVersion && manifest.kind && manifest.metadata?.name, JSON.stringify(manifest).slice(0, 200));

  const { config } = loadConfig({}, gatewayEnv, deploy);
  const deployment = manifests.find((m) => m.kind === 'Deployment');
  const pod = deployment.spec.template.spec;
  const container = pod.containers[0];
  assert.ok(deployment.spec.replicas >= 2);
  assert.deepEqual(deployment.spec.selector.matchLabels, deployment.spec.template.metadata.labels);
  const port = container.ports.find((p: Doc) => p.name === 'http');
  assert.equal(port.containerPort, config.server.port);
  assert.deepEqual([container.livenessProbe.httpGet.path, container.livenessProbe.httpGet.port], ['/health', 'http']);
  assert.deepEqual([container.readinessProbe.httpGet.path, container.readinessProbe.httpGet.port], ['/ready', 'http']);
  const preStop = container.lifecycle.preStop.sleep.seconds;
  assert.ok(pod.terminationGracePeriodSeconds > preStop + config.server.drainTimeoutSeconds);
  // The config file the container reads is the generated config map, mounted where INFERA_CONFIG says.
  const configPath = container.env.find((e: Doc) => e.name === 'INFERA_CONFIG').value;
  const mount = container.volumeMounts.find((m: Doc) => configPath.startsWith(`${m.mountPath}/`));
  const volume = pod.volumes.find((v: Doc) => v.name === mount.name);
  assert.equal(volume.configMap.name, kustomization.configMapGenerator[0].name);
  assert.equal(`${mount.mountPath}/${kustomization.configMapGenerator[0].files[0].split('=')[0]}`, configPath);
  // Secrets the pod reads hold the storage URLs the loader takes from the environment.
  const secretName = container.envFrom[0].secretRef.name;
  const [secret] = documents(join(k8s, 'secret.example.yaml'));
  assert.equal(secret.metadata.name, secretName);
  for (const key of ['INFERA_DATABASE_URL', 'INFERA_REDIS_URL']) assert.ok(key in secret.stringData, key);

  const service = manifests.find((m) => m.kind === 'Service' && m.metadata.name === 'infera');
  assert.deepEqual(service.spec.selector, deployment.spec.template.metadata.labels);
  assert.equal(service.spec.ports[0].targetPort, 'http');
  // Every upstream host of the config resolves in the gateway's namespace (an ExternalName to its fleet).
  for (const model of config.models) {
    const host = upstreamHost(model);
    assert.ok(
      manifests.some((m) => m.kind === 'Service' && m.metadata.name === host),
      `${model.id}: no Service named ${host}`,
    );
  }
});

// kustomize itself (kubectl's built-in copy) where this machine has kubectl: the set must build as the
// docs say to apply it — it once referenced ../infera.yaml, which kustomize refuses to load.
const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;
test('kubernetes: `kubectl kustomize deploy` builds; the Deployment mounts the generated config map holding deploy/infera.yaml', { skip: kubectl ? false : 'kubectl is not installed' }, () => {
  const built = spawnSync('kubectl', ['kustomize', deploy], { encoding: 'utf8' });
  assert.equal(built.status, 0, built.stderr);
  const manifests = parseAllDocuments(built.stdout).map((doc) => doc.toJS() as Doc);
  const kinds = manifests.map((m) => m.kind).sort();
  for (const kind of ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Namespace', 'PodDisruptionBudget', 'Service'])
    assert.ok(kinds.includes(kind), `${kind} missing from ${kinds.join(', ')}`);
  for (const m of manifests) if (m.kind !== 'Namespace') assert.equal(m.metadata.namespace, 'infera', `${m.kind}/${m.metadata.name}`);
  const configMap = manifests.find((m) => m.kind === 'ConfigMap');
  assert.match(configMap.metadata.name, /^infera-config-[a-z0-9]+$/);
  assert.equal(configMap.data['infera.yaml'], readFileSync(join(deploy, 'infera.yaml'), 'utf8'));
  const pod = manifests.find((m) => m.kind === 'Deployment').spec.template.spec;
  assert.ok(pod.volumes.some((v: Doc) => v.configMap?.name === configMap.metadata.name), 'the pod mounts the hashed config map name');
});
