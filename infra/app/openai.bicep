// One Azure OpenAI account with the gateway's deployments. main.bicep uses it twice,
// in two regions; the gateway balances across them (GATEWAY_BACKENDS).
param name string
param location string
param tags object
@description('Deployments to create: [{ name, model, version, sku, capacity }], capacity in thousands of tokens per minute.')
param deployments array
@description('Enabled: reachable over the public endpoint (Entra auth only). Disabled: only through a private endpoint (main.bicep: privateNetworking). Private unless main.bicep says otherwise.')
@allowed(['Enabled', 'Disabled'])
param publicNetworkAccess string = 'Disabled'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_238:The account calls no other service (no customer-managed key, no data sources), so it has no identity to give
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  properties: {
    // Entra tokens need the custom subdomain; keys are off.
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: publicNetworkAccess
    networkAcls: {
      defaultAction: publicNetworkAccess == 'Enabled' ? 'Allow' : 'Deny'
    }
  }
}

// An account takes one deployment change at a time.
@batchSize(1)
resource deployment 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = [for d in deployments: {
  parent: account
  name: d.name
  sku: {
    name: d.sku
    capacity: d.capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: d.model
      version: d.version
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}]

output name string = account.name
output id string = account.id
output endpoint string = account.properties.endpoint
