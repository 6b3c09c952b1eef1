/**
 * The RepoHost of this process's own disk (host.ts): a repository lives at
 * `<data>/repos/<ULID[0:2]>/<ULID>.git`. Creation stages the directory under `<data>/tmp` and
 * renames it into place, so a crash leaves a leftover there (removed by crash recovery), never
 * a half-made repository; removal renames it aside first, so its place is free at once.
 *
 * Serving git needs what only a storage node has (the git limiter or the pack cache, residency,
 * the hook socket): `serving`. Without it (the admin CLI) the host creates and removes only.
 */
import { createGunzip } from 'node:zlib';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { cloneLocalMirror, initBare, setConfig, setSymbolicRef, symbolicHead } from '../git/command.js';
import type { GitResponse, GitServices, ServiceLimits } from '../git/smart-http.js';
import { conflict, notFound, unavailable } from '../shared/errors.js';
import type { GitCall, HostedRepo, NewRepo, RepoHost, RpcCall, SessionCall } from './host.js';

/** Where repositories live under a data directory (the node's own modules use it; callers of RepoHost never do). */
export function repoDir(dataDir: string, id: string): string {
  return path.join(dataDir, 'repos', id.slice(0, 2), `${id}.git`);
}

/** The ids of the repositories on this disk, from the directory layout of repoDir(). */
export async function repoIdsOnDisk(dataDir: string): Promise<string[]> {
  const root = path.join(dataDir, 'repos');
  const ids: string[] = [];
  for (const prefix of await readdir(root).catch(() => [] as string[])) {
    for (const name of await readdir(path.join(root, prefix)).catch(() => [] as string[])) {
      if (name.endsWith('.git') && name.startsWith(prefix)) ids.push(name.slice(0, -'.git'.length));
    }
  }
  return ids.sort();
}

/** Settings every new repository gets (see docs/design/repositories.md for why each). */
export function repositoryConfig(): [string, string][] {
  return [
    ['receive.fsckObjects', 'true'],
    ['receive.advertisePushOptions', 'true'],
    ['receive.denyNonFastForwards', 'false'],
    ['receive.denyDeletes', 'false'],
    ['uploadpack.allowFilter', 'true'],
    ['uploadpack.allowReachableSHA1InWant', 'true'],
    ['core.fsync', 'objects,derived-metadata,reference'],
    ['core.fsyncMethod', 'fsync'],
    ['core.logAllRefUpdates', 'true'],
    // Relative to the repository directory, so the data directory can move as a whole.
    ['core.hooksPath', '../../../hooks'],
  ];
}

export interface LocalServing {
  /** Runs git (through the pack cache when it is on). */
  git: GitServices;
  limits: ServiceLimits;
  /** Read per request: the socket's place is chosen when the hook server listens. */
  hookSocket: () => string;
  /** Keeps the repository on disk while git runs in it, restoring it first if it was evicted. */
  residency: { acquire(repo: HostedRepo): Promise<() => void> };
  /** On a storage node: the shard lease epoch a push runs under (its hooks check it). */
  epoch?: () => number | undefined;
  /** On a storage node: whether a push now runs with a synchronous replica (read when git starts). */
  sync?: () => boolean;
}

export class LocalRepoHost implements RepoHost {
  constructor(
    private readonly dataDir: string,
    private readonly serving?: LocalServing,
  ) {}

  /** The repository's directory: for this node's own modules (maintenance, snapshots, recovery). */
  repoPath(id: string): string {
    return repoDir(this.dataDir, id);
  }

  location(id: string): string {
    return this.repoPath(id);
  }

  async create(repo: NewRepo): Promise<void> {
    const final = this.repoPath(repo.id);
    const tmp = path.join(this.dataDir, 'tmp');
    const staging = path.join(tmp, `${repo.forkOf ? 'fork' : 'init'}-${repo.id}.git`);
    if (await stat(final).catch(() => undefined)) throw conflict('repo_dir_exists', `repository ${repo.id} already exists on this host`);
    await mkdir(tmp, { recursive: true });
    await mkdir(path.dirname(final), { recursive: true });
    try {
      if (repo.forkOf) {
        // Every ref and object of the source, hardlinked, with the settings and HEAD a new repository gets.
        const source = this.repoPath(repo.forkOf);
        if (!(await stat(source).catch(() => undefined))) throw notFound('repo_dir_missing', `repository ${repo.forkOf} is not on this host`);
        await cloneLocalMirror(source, staging);
        await setConfig(staging, repositoryConfig());
        await setSymbolicRef(staging, 'HEAD', (await symbolicHead(source)) ?? `refs/heads/${repo.defaultBranch}`);
      } else {
        await initBare(staging, repo.defaultBranch);
        await setConfig(staging, repositoryConfig());
      }
      await rename(staging, final);
    } catch (err) {
      await rm(staging, { recursive: true, force: true });
      throw err;
    }
  }

  async remove(id: string): Promise<void> {
    const tmp = path.join(this.dataDir, 'tmp');
    const trash = path.join(tmp, `deleted-${id}-${Date.now()}`);
    await mkdir(tmp, { recursive: true });
    await rename(this.repoPath(id), trash).catch(() => undefined);
    await rm(trash, { recursive: true, force: true });
  }

  advertiseRefs(repo: HostedRepo, call: GitCall, signal: AbortSignal): Promise<GitResponse> {
    const serving = this.requireServing();
    return this.onDisk(serving, repo, () =>
      serving.git.advertiseRefs({ service: call.service, repoId: repo.id, repoPath: this.repoPath(repo.id), protocol: call.protocol, limits: serving.limits }, signal),
    );
  }

  statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse> {
    const serving = this.requireServing();
    return this.onDisk(serving, repo, () =>
      serving.git.statelessRpc(
        {
          service: call.service,
          repoId: repo.id,
          repoPath: this.repoPath(repo.id),
          protocol: call.protocol,
          input: call.input,
          open: call.open,
          decoder: call.encoding === 'gzip' ? createGunzip() : undefined,
          hook: { repoId: repo.id, ...call.pusher, socketPath: serving.hookSocket(), epoch: serving.epoch?.(), sync: serving.sync?.() },
          limits: serving.limits,
        },
        signal,
      ),
    );
  }

  uploadPackSession(repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse> {
    const serving = this.requireServing();
    const git = serving.git;
    if (!git.uploadPackSession) throw unavailable('no_session', 'this host runs no whole fetch conversations');
    return this.onDisk(serving, repo, () => git.uploadPackSession!({ repoPath: this.repoPath(repo.id), protocol: call.protocol, input: call.input, limits: serving.limits }, signal));
  }

  private requireServing(): LocalServing {
    if (!this.serving) throw unavailable('not_serving', 'this process does not serve git');
    return this.serving;
  }

  /** Runs `start` with the repository held on disk until git is done with it. */
  private async onDisk(serving: LocalServing, repo: HostedRepo, start: () => Promise<GitResponse>): Promise<GitResponse> {
    const release = await serving.residency.acquire(repo);
    try {
      const res = await start();
      res.done.finally(release).catch(() => {});
      return res;
    } catch (err) {
      release();
      throw err;
    }
  }
}
