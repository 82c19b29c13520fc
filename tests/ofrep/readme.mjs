import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

await OpenFeature.setProviderAndWait(new OFREPProvider({
  baseUrl: process.env.EXPD_URL ?? 'http://127.0.0.1:8080',
  headers: [['Authorization', `Bearer ${process.env.EXPD_TOKEN ?? ''}`]], // a data_plane token
}));
const details = await OpenFeature.getClient().getObjectDetails('reco_ymal_v1', {}, {
  targetingKey: 'u-18227', session_id: 's-5f1c9a', placement: 'you_may_also_like',
});
console.log(details.variant, details.reason, JSON.stringify(details.value));
