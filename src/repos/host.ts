/**
 * RepoHost: the one boundary for "where a repository lives" (issue 10, docs/architecture.md).
 * Everything that needs a repository's directory goes through it: creating (empty or as a
 * fork), removing, and serving git. Callers name repositories by id and hand over streams; they
 * never see a path, a hook socket or a git process.
 *
 * Two implementations pass one contract suite (host-contract.ts): LocalRepoHost runs it in this
 * process on this machine's disk; RemoteRepoHost asks the storage node that holds the shard,
 * over HTTP signed with the cluster secret (http/node-routes.ts).
 *
 * What stays inside a storage node, and is not part of the boundary: maintenance, snapshots,
 * crash recovery and eviction run where the disk is, on their own schedule (app.ts, the node).
 */
import type { Readable } from 'node:stream';
import type { GitService } from '../git/command.js';
import type { GitResponse } from '../git/smart-http.js';

/** What a host needs to know of a repository to serve it (restoring it first if evicted). */
export interface HostedRepo {
  id: string;
  defaultBranch: string;
  /** owner/space/name, for logs and messages. */
  label: string;
}

export interface NewRepo {
  id: string;
  defaultBranch: string;
  /** A fork: every ref and object of this repository, which must live on the same host. */
  forkOf?: string | undefined;
}

export interface GitCall {
  service: GitService;
  /** The validated `Git-Protocol` value (command.ts gitProtocolValue), if any. */
  protocol?: string | undefined;
}

export interface RpcCall extends GitCall {
  /** The request body as the client sent it. */
  input: Readable;
  /** Its `Content-Encoding` (`gzip` or none); the host decodes it. */
  encoding?: 'gzip' | undefined;
  /** The input stays open until the answer has been read (git over SSH; smart-http.ts RpcOptions). */
  open?: boolean | undefined;
  /** Who pushes, for hooks and the audit log (receive-pack). */
  pusher: Pusher;
}

export interface SessionCall {
  protocol?: string | undefined;
  /** The client's side of the conversation, open until the client ends it. */
  input: Readable;
}

export interface Pusher {
  actorId: string | null;
  actorName: string;
  requestId: string;
}

export interface RepoHost {
  /** Where the repository lives, for operators: its directory, with the node's URL when remote. */
  location(id: string): string;
  /** Creates the repository's directory: empty, or a copy of `forkOf`'s refs and objects. */
  create(repo: NewRepo): Promise<void>;
  /** Removes the repository's directory; nothing happens when it is already gone. */
  remove(id: string): Promise<void>;
  /** The ref advertisement of `GET …/info/refs`. */
  advertiseRefs(repo: HostedRepo, call: GitCall, signal: AbortSignal): Promise<GitResponse>;
  /** The stateless-RPC exchange of `POST …/git-upload-pack` and `…/git-receive-pack`. */
  statelessRpc(repo: HostedRepo, call: RpcCall, signal: AbortSignal): Promise<GitResponse>;
  /**
   * A whole protocol v0/v1 fetch over one stream each way (git over SSH: the advertisement,
   * then the negotiation as the client's lines arrive). It runs where the repository is; a
   * remote host carries both streams to the storage node at once.
   */
  uploadPackSession(repo: HostedRepo, call: SessionCall, signal: AbortSignal): Promise<GitResponse>;
}

/** Finds the host of a repository (by its shard); one host for every repository in `serve`. */
export type HostOf = (repo: { id: string; shard: string }) => RepoHost;
