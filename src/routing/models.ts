// The routed model of each kind: properties and per-request checks come from the deployment leased
// last (deployments of one model agree on them), every call that runs the model goes through the
// router, which picks the deployment and retries before the first byte.
import type {
  AnyModel,
  ChatCallOptions,
  ChatModel,
  ChatResult,
  ChatStreamPart,
  CompletionCallOptions,
  CompletionResult,
  CompletionStreamPart,
  EmbedCallOptions,
  EmbeddingModel,
  EmbedResult,
  ImageCallOptions,
  ImageModel,
  ImageResult,
  RerankCallOptions,
  RerankModel,
  RerankResult,
} from '../spec/index.ts';
import type { Router } from './router.ts';

export function routedModel(router: Router): AnyModel {
  switch (router.type) {
    case 'chat':
      return new RoutedChat(router);
    case 'embedding':
      return new RoutedEmbedding(router);
    case 'reranker':
      return new RoutedRerank(router);
    case 'text-to-image':
      return new RoutedImages(router);
  }
}

abstract class Routed<M extends AnyModel> {
  constructor(protected readonly router: Router) {}

  protected get home(): M {
    return this.router.home as M;
  }

  get name(): string {
    return this.home.name;
  }
}

class RoutedChat extends Routed<ChatModel> implements ChatModel {
  readonly kind = 'chat';

  get contextSize() {
    return this.home.contextSize;
  }

  get thinks() {
    return this.home.thinks;
  }

  get infill() {
    return this.home.infill;
  }

  checkPrompt(options: ChatCallOptions): Promise<number> {
    return this.home.checkPrompt(options);
  }

  doGenerate(options: ChatCallOptions): Promise<ChatResult> {
    return this.router.call(options.signal, (model) => (model as ChatModel).doGenerate(options));
  }

  doStream(options: ChatCallOptions): AsyncIterable<ChatStreamPart> {
    return this.router.stream(options.signal, (model) => (model as ChatModel).doStream(options));
  }

  // Text completion exists when the deployments offer it (serving tests for the three methods).
  get checkCompletion() {
    const home = this.home;
    return home.checkCompletion ? (options: CompletionCallOptions) => home.checkCompletion!(options) : undefined;
  }

  get doComplete() {
    if (!this.home.doComplete) return undefined;
    return (options: CompletionCallOptions): Promise<CompletionResult> =>
      this.router.call(options.signal, (model) => (model as ChatModel).doComplete!(options));
  }

  get doCompleteStream() {
    if (!this.home.doCompleteStream) return undefined;
    return (options: CompletionCallOptions): AsyncIterable<CompletionStreamPart> =>
      this.router.stream(options.signal, (model) => (model as ChatModel).doCompleteStream!(options));
  }
}

class RoutedEmbedding extends Routed<EmbeddingModel> implements EmbeddingModel {
  readonly kind = 'embedding';

  get dimensions() {
    return this.home.dimensions;
  }

  get maxInputTokens() {
    return this.home.maxInputTokens;
  }

  get matryoshka() {
    return this.home.matryoshka;
  }

  get vocabularySize() {
    return this.home.vocabularySize;
  }

  get takesText() {
    return this.home.takesText;
  }

  get preferredBatching() {
    return this.home.preferredBatching;
  }

  tokenize(text: string): Promise<number[]> {
    return this.home.tokenize(text);
  }

  doEmbed(options: EmbedCallOptions): Promise<EmbedResult> {
    return this.router.call(options.signal, (model) => (model as EmbeddingModel).doEmbed(options));
  }
}

class RoutedRerank extends Routed<RerankModel> implements RerankModel {
  readonly kind = 'reranker';

  get maxInputTokens() {
    return this.home.maxInputTokens;
  }

  get acceptsInstruction() {
    return this.home.acceptsInstruction;
  }

  get preferredBatching() {
    return this.home.preferredBatching;
  }

  doRerank(options: RerankCallOptions): Promise<RerankResult> {
    return this.router.call(options.signal, (model) => (model as RerankModel).doRerank(options));
  }
}

class RoutedImages extends Routed<ImageModel> implements ImageModel {
  readonly kind = 'text-to-image';

  get limits() {
    return this.home.limits;
  }

  get imageToImage() {
    return this.home.imageToImage;
  }

  get defaultStrength() {
    return this.home.defaultStrength;
  }

  get capabilities() {
    return this.home.capabilities;
  }

  get warnings() {
    return this.home.warnings;
  }

  doGenerateImages(options: ImageCallOptions): Promise<ImageResult> {
    return this.router.call(options.signal, (model) => (model as ImageModel).doGenerateImages(options));
  }
}
